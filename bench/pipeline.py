"""Pipeline: whole order dialogs through server, worker, RabbitMQ, Redis, PostgreSQL
and a fake Chat2Desk API, per worker count; plus the bare consume-and-ack ceiling.

A step is one customer message: webhook accepted, then the worker's lock, state,
order insert (every fifth step), reply sent to the fake API, commit, ack. The
latency is from the webhook's 200 to the reply's arrival at the fake API: what a
customer waits for. The ceiling is an aio-pika consumer at the worker's prefetch
that only acks, so the ratio says how much of what the broker can hand out one
worker turns into dialog steps.

`python -m bench.pipeline [--quick]` runs it alone; `bench.all` runs everything.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench.harness import (
    RESULTS,
    WEBHOOK_TOKEN,
    Meter,
    Stack,
    free_port,
    run_json,
    say,
    spawn,
    uses_uvloop,
)
from bench.plan import FULL, QUICK, Plan

Progress = Callable[[int], None]


class DriverRuns:
    """Starts driver processes with customer ids no earlier run used."""

    def __init__(self, stack: Stack, log_dir: Path) -> None:
        self.stack = stack
        self.log_dir = log_dir
        self.count = 0

    async def run(
        self,
        *,
        mode: str,
        seconds: float,
        warmup: float,
        customers: int,
        rate: float | None = None,
        max_steps: int = 1_000_000,
        on_progress: Progress | None = None,
    ) -> dict[str, Any]:
        self.count += 1
        workers = len(self.stack.workers)
        say(f"pipeline {mode} loop{f' {rate:.0f}/s' if rate else ''}, {workers} worker(s)")
        args = ["-m", "bench.driver", "--server-port", str(self.stack.http_port)]
        args += ["--api-port", str(self.stack.api_port), "--token", WEBHOOK_TOKEN]
        args += ["--mode", mode, "--customers", str(customers), "--duration", str(seconds)]
        args += ["--warmup", str(warmup), "--max-steps", str(max_steps)]
        args += ["--run-id", f"p{self.count}-{uuid.uuid4().hex[:6]}"]
        args += ["--first-client-id", str(10**9 + self.count * 10**6)]
        if rate is not None:
            args += ["--rate", str(rate)]
        args += ["--progress"]  # also the beat at which the driver's RSS is sampled
        meter = Meter(self.stack.procs)
        proc = await spawn("driver", args, {}, self.log_dir, stdout_pipe=True)
        assert proc.process.stdout is not None
        result: dict[str, Any] | None = None
        try:
            async with asyncio.timeout(seconds + warmup + 60):
                async for line in proc.process.stdout:
                    message = orjson.loads(line)
                    if "progress" in message:
                        proc.usage()
                        if on_progress is not None:
                            on_progress(int(message["progress"]))
                    elif "result" in message:
                        result = message["result"]
                await proc.process.wait()
        except TimeoutError:
            proc.process.kill()
            await proc.process.wait()
        if result is None:
            raise RuntimeError(f"driver gave no result:\n{proc.tail()}")
        result.update(meter.read())
        result["driver_peak_rss_mb"] = round(proc.peak_rss_mb, 1)
        # CPU per dialog step of the server and of all workers together (see ingest.py).
        cores: dict[str, float] = result["cores_used"]
        rate = float(result["steps_per_s"])
        worker_cores = 0.0
        for name, used in cores.items():
            worker_cores += used if name.startswith("worker") else 0.0
        if rate > 0:
            result["cpu_us_per_step"] = {
                "server": round(cores.get("server", 0.0) / rate * 1e6),
                "workers": round(worker_cores / rate * 1e6),
            }
        return result


async def consume_ceiling(stack: Stack, plan: Plan, log_dir: Path) -> dict[str, Any]:
    args = ["-m", "bench.baselines", "consume", "--amqp-url", stack.settings.amqp_url]
    args += ["--queue", stack.settings.queue("bare-consume"), "--count", str(plan.consume_count)]
    args += ["--prefetch", str(stack.settings.worker_concurrency)]
    args += ["--uvloop"] if uses_uvloop() else []
    say(f"bare consume+ack of {plan.consume_count} messages")
    return await run_json("bare-consume", args, log_dir, within=180)


async def run_pipeline(stack: Stack, plan: Plan, log_dir: Path) -> dict[str, Any]:
    ceiling = await consume_ceiling(stack, plan, log_dir)
    drivers = DriverRuns(stack, log_dir)
    per_workers: dict[str, Any] = {}
    for workers in plan.worker_counts:
        await stack.start_workers(workers)
        closed = await drivers.run(
            mode="closed",
            seconds=plan.pipeline_seconds,
            warmup=plan.warmup,
            customers=plan.customers,
        )
        open_runs = []
        for rate in plan.pipeline_rates:
            open_runs.append(
                await drivers.run(
                    mode="open",
                    seconds=plan.open_seconds,
                    warmup=plan.warmup,
                    customers=plan.customers,
                    rate=rate,
                )
            )
        depths = await stack.queue_depths()
        exits = await stack.stop_workers()
        per_workers[str(workers)] = {
            "exit_codes": exits,
            "closed": closed,
            "open": open_runs,
            "ratio_to_bare_consume": round(
                float(closed["steps_per_s"]) / float(ceiling["rate"]), 3
            ),
            "queues_after": depths,
        }
    return {
        "prefetch": stack.settings.worker_concurrency,
        "bare_consume": ceiling,
        "workers": per_workers,
    }


async def main_async(plan: Plan) -> dict[str, Any]:
    from bench.report import save_json

    log_dir = RESULTS / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    async with Stack(log_dir=log_dir, api_port=free_port()) as stack:
        result = await run_pipeline(stack, plan, log_dir)
        result["orders_in_db"] = await stack.count_orders()
    save_json("pipeline", result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(main_async(QUICK if args.quick else FULL))
    print(f"bare consume+ack: {result['bare_consume']['rate']} msg/s")
    for workers, run in result["workers"].items():
        closed = run["closed"]
        print(
            f"{workers} worker(s): {closed['steps_per_s']} steps/s, "
            f"{closed['orders_per_s']} orders/s, p99 {closed['accept_to_reply_ms']['p99']} ms, "
            f"ratio {run['ratio_to_bare_consume']}"
        )
        for open_run in run["open"]:
            print(
                f"   open {open_run['offered_rate']}/s: p99 {open_run['accept_to_reply_ms']['p99']}"
            )


if __name__ == "__main__":
    main()
