"""Memory: resident size of the server and a worker while 100k messages go through.

A leak in a long-running consumer shows as a slope, not a peak: the RSS of a
healthy Python process settles after its caches fill and then stays flat. So
the soak samples RSS against messages processed and fits a line through the
second half (after the warm-up growth), reported in MB per 100k messages, and
again through the last third: a slope that shrinks from one to the other is
warm-up still settling, one that holds is a leak.

`make bench` soaks until 100k messages or 200 s, whichever comes first (what fits
in its ten minutes); `python -m bench.memory --messages N` runs the soak alone (about
as many seconds as messages / steps per second).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.harness import RESULTS, Stack, free_port, say
from bench.pipeline import DriverRuns
from bench.plan import FULL, Plan
from bench.stats import slope


async def run_soak(stack: Stack, plan: Plan, log_dir: Path) -> dict[str, Any]:
    say(f"memory soak: {plan.soak_messages} messages, 1 worker")
    await stack.start_workers(1)
    procs = stack.procs
    series: list[dict[str, float]] = []
    last = 0.0

    def sample(steps: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < 1.0:
            return
        last = now
        point: dict[str, float] = {"messages": float(steps)}
        for proc in procs:
            found = proc.usage()
            if found is not None:
                point[proc.name] = round(found.rss_mb, 2)
        series.append(point)

    result = await DriverRuns(stack, log_dir).run(
        mode="closed",
        seconds=plan.soak_seconds,
        warmup=0.0,
        customers=plan.soak_customers,
        max_steps=plan.soak_messages,
        on_progress=sample,
    )
    depths = await stack.queue_depths()
    exits = await stack.stop_workers()

    def slopes_over(points: list[dict[str, float]]) -> dict[str, float]:
        found = {}
        for proc in procs:
            xs = [p["messages"] for p in points if proc.name in p]
            ys = [p[proc.name] for p in points if proc.name in p]
            found[proc.name] = round(slope(xs, ys) * 100_000, 2)
        return found

    slopes = slopes_over(series[len(series) // 2 :])
    last_third = slopes_over(series[2 * len(series) // 3 :])
    return {
        "messages": result["steps_total"],
        "orders": result["orders_total"],
        "customers": result["customers"],
        "seconds": result["seconds"],
        "steps_per_s": result["steps_per_s"],
        "slope_mb_per_100k": slopes,
        "slope_last_third_mb_per_100k": last_third,
        "rss_start_mb": {k: v for k, v in (series[0] if series else {}).items() if k != "messages"},
        "rss_end_mb": {k: v for k, v in (series[-1] if series else {}).items() if k != "messages"},
        "peak_rss_mb": {p.name: round(p.peak_rss_mb, 1) for p in procs},
        "series": series,
        "queues_after": depths,
        "exit_codes": exits,
        "lost": result["lost"],
    }


async def main_async(messages: int, seconds: float) -> dict[str, Any]:
    from bench.report import save_json

    log_dir = RESULTS / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    plan = replace(FULL, soak_messages=messages, soak_seconds=seconds)
    async with Stack(log_dir=log_dir, api_port=free_port()) as stack:
        result = await run_soak(stack, plan, log_dir)
        result["orders_in_db"] = await stack.count_orders()
    save_json(f"memory-{messages}", result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=900.0, help="stop here at the latest")
    args = parser.parse_args()
    result = asyncio.run(main_async(args.messages, args.seconds))
    print(
        f"{result['messages']} messages in {result['seconds']} s ({result['steps_per_s']}/s); "
        f"orders {result['orders']} (in the database: {result['orders_in_db']})"
    )
    for name in result["slope_mb_per_100k"]:
        start, end = result["rss_start_mb"].get(name), result["rss_end_mb"].get(name)
        print(
            f"{name}: RSS {start} -> {end} MB,"
            f" peak {result['peak_rss_mb'][name]} MB, slope {result['slope_mb_per_100k'][name]}"
            f" MB/100k (last third {result['slope_last_third_mb_per_100k'][name]})"
        )


if __name__ == "__main__":
    main()
