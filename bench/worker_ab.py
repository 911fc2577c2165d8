"""The worker's CPU per dialog step: another checkout's worker against this one's, in turns.

`python -m bench.worker_ab --baseline DIR [--rounds 3] [--runs 2] [--seconds 10]` runs the
pipeline's closed loop (server, one worker, 64 customers, history on; bench/pipeline.py)
on one stack, the worker started from DIR (by PYTHONPATH) and from this checkout in
turns, round after round, so that a shared machine's drift falls on both alike. The
server, the driver and the services are the same for both: only the worker differs. DIR
must run on this checkout's virtualenv (the same dependencies), e.g. a `git worktree` or
a `git archive` of the baseline commit.

The figure is the worker's CPU per step, from its own CPU time over the run (the
pipeline's table rounds the cores to two digits, too coarse to tell two runs apart);
steps/s moves with whatever else the machine runs. Beside it, RabbitMQ's CPU per step
over the same run (the whole broker, so an upper bound on a shared one): a change in
how the worker consumes and acknowledges shows there. Prints each run and the ratio of the
medians (this checkout ÷ baseline); the runs go to bench/results/worker-ab.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from bench.harness import RESULTS, Stack, free_port, say, services_cpu
from bench.pipeline import DriverRuns

CUSTOMERS = 64
WARMUP = 1.0


async def _one_run(
    stack: Stack, drivers: DriverRuns, seconds: float, pythonpath: Path | None
) -> dict[str, Any]:
    env = {"PYTHONPATH": str(pythonpath)} if pythonpath is not None else {}
    await stack.start_workers(1, env=env)
    worker = stack.workers[0]
    before, started = worker.usage(), time.monotonic()
    broker_before = services_cpu()["rabbitmq"]
    result = await drivers.run(mode="closed", seconds=seconds, warmup=WARMUP, customers=CUSTOMERS)
    broker = services_cpu()["rabbitmq"] - broker_before
    after, elapsed = worker.usage(), time.monotonic() - started
    await stack.stop_workers()
    if before is None or after is None:
        raise RuntimeError("the worker's CPU time could not be read")
    rate = float(result["steps_per_s"])
    cores = (after.cpu_s - before.cpu_s) / elapsed
    return {
        "steps_per_s": rate,
        "worker_cpu_us_per_step": round(cores / rate * 1e6) if rate else None,
        "rabbitmq_cpu_us_per_step": round(broker / elapsed / rate * 1e6) if rate else None,
        "machine_busy": result.get("machine_busy"),
        "replies_missing": result.get("replies_missing"),
    }


async def main_async(baseline: Path, rounds: int, runs: int, seconds: float) -> dict[str, Any]:
    from bench.report import save_json

    log_dir = RESULTS / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    sides: dict[str, Path | None] = {"baseline": baseline, "this": None}
    results: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    async with Stack(log_dir=log_dir, api_port=free_port()) as stack:
        drivers = DriverRuns(stack, log_dir)
        for round_ in range(1, rounds + 1):
            for side, path in sides.items():
                for _ in range(runs):
                    say(f"round {round_}: the {side} worker")
                    run = await _one_run(stack, drivers, seconds, path)
                    results[side].append(run)
                    print(side, run, flush=True)
    medians = {
        side: statistics.median(r["worker_cpu_us_per_step"] for r in runs_)
        for side, runs_ in results.items()
    }
    broker = {
        side: statistics.median(r["rabbitmq_cpu_us_per_step"] for r in runs_)
        for side, runs_ in results.items()
    }
    summary = {
        "baseline": str(baseline),
        "runs": results,
        "median_worker_cpu_us_per_step": medians,
        "median_rabbitmq_cpu_us_per_step": broker,
        "ratio_this_to_baseline": round(medians["this"] / medians["baseline"], 3),
    }
    save_json("worker-ab", summary)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    summary = asyncio.run(main_async(args.baseline.resolve(), args.rounds, args.runs, args.seconds))
    medians = summary["median_worker_cpu_us_per_step"]
    print(
        f"worker CPU per step, median: baseline {medians['baseline']:.0f} us, "
        f"this {medians['this']:.0f} us, ratio {summary['ratio_this_to_baseline']}"
    )
    broker = summary["median_rabbitmq_cpu_us_per_step"]
    print(
        f"RabbitMQ CPU per step, median: baseline {broker['baseline']:.0f} us, "
        f"this {broker['this']:.0f} us"
    )


if __name__ == "__main__":
    main()
