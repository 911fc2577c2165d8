"""History cost: the same closed-loop pipeline (server, one worker) with the conversation
history off and on, alternating (off, on, off, on, ...) so that a shared machine's drift
falls on both alike; the best run of each is kept, and the ratio on/off reported.

With history on, every step also hands its message and reply to the worker's history
writer, which batches them into PostgreSQL, and the step waits for its batch before it
commits. `python -m bench.history_cost [--quick]` runs it alone; `bench.all` runs it after
the pipeline.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from bench.harness import RESULTS, Stack, free_port, say
from bench.pipeline import DriverRuns
from bench.plan import FULL, QUICK, Plan

MODES = {"off": "false", "on": "true"}


async def run_history_cost(stack: Stack, plan: Plan, log_dir: Any) -> dict[str, Any]:
    drivers = DriverRuns(stack, log_dir)
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    rows_written = 0
    for _ in range(max(plan.rounds, 2)):
        for mode, enabled in MODES.items():
            before = await stack.count_history()
            await stack.start_workers(1, env={"HISTORY_ENABLED": enabled})
            say(f"history {mode}")
            result = await drivers.run(
                mode="closed",
                seconds=plan.pipeline_seconds,
                warmup=plan.warmup,
                customers=plan.customers,
            )
            await stack.stop_workers()
            written = await stack.count_history() - before
            result["history_rows_written"] = written
            if mode == "on":
                rows_written += written
            runs[mode].append(result)
    best = {mode: max(r, key=lambda x: float(x["steps_per_s"])) for mode, r in runs.items()}
    off, on = (float(best[m]["steps_per_s"]) for m in ("off", "on"))
    return {
        "runs": runs,
        "best": {
            mode: {
                "steps_per_s": run["steps_per_s"],
                "accept_to_reply_ms": run["accept_to_reply_ms"],
                "cpu_us_per_step": run.get("cpu_us_per_step"),
                "cores_used": run["cores_used"],
                "machine_busy": run.get("machine_busy"),
            }
            for mode, run in best.items()
        },
        "steps_ratio_on_to_off": round(on / off, 3) if off else None,
        "history_rows_written_on": rows_written,
    }


def summary(result: dict[str, Any]) -> list[str]:
    lines = []
    for mode in MODES:
        run = result["best"][mode]
        latency = run["accept_to_reply_ms"]
        cpu = run.get("cpu_us_per_step") or {}
        lines.append(
            f"history {mode}: {run['steps_per_s']:.0f} steps/s, p50 {latency['p50']:.1f} ms, "
            f"p99 {latency['p99']:.1f} ms, worker CPU {cpu.get('workers', '—')} µs/step, "
            f"postgresql {run['cores_used'].get('postgresql', 0):.2f} cores"
        )
    lines.append(
        f"ratio on/off {result['steps_ratio_on_to_off']}; "
        f"rows written with it on: {result['history_rows_written_on']}"
    )
    return lines


async def main_async(plan: Plan) -> dict[str, Any]:
    from bench.report import save_json

    log_dir = RESULTS / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    async with Stack(log_dir=log_dir, api_port=free_port()) as stack:
        result = await run_history_cost(stack, plan, log_dir)
    save_json("history-cost", result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(main_async(QUICK if args.quick else FULL))
    print("\n".join(summary(result)))


if __name__ == "__main__":
    main()
