"""`python -m bench.leakcheck`: see __init__.py."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path

from bench.harness import RESULTS, Stack, free_port, say
from bench.pipeline import DriverRuns

HERE = Path(__file__).resolve().parent


async def run(messages: int, warmup: int, seconds: float) -> str:
    log_dir = RESULTS / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "tracemalloc.txt"
    out.unlink(missing_ok=True)
    paths = [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {
        "PYTHONPATH": os.pathsep.join(paths),
        "BENCH_TRACEMALLOC": "1",
        "BENCH_TRACEMALLOC_OUT": str(out),
    }
    async with Stack(log_dir=log_dir, api_port=free_port(), extra_env=env) as stack:
        await stack.start_workers(1)
        procs = stack.procs
        marked = False

        def on_progress(steps: int) -> None:
            nonlocal marked
            if not marked and steps >= warmup:
                marked = True
                say(f"first snapshot at {steps} messages")
                for proc in procs:
                    os.kill(proc.pid, signal.SIGUSR2)

        await DriverRuns(stack, log_dir).run(
            mode="closed",
            seconds=seconds,
            warmup=0,
            customers=200,
            max_steps=messages,
            on_progress=on_progress,
        )
        say("last snapshot")
        for proc in procs:
            os.kill(proc.pid, signal.SIGUSR2)
        async with asyncio.timeout(120):  # a snapshot of a traced process takes seconds
            # polling a file the traced processes write; there is nothing to wait on instead
            while not out.exists() or out.read_text().count("=== end") < 2 * len(procs):  # noqa: ASYNC110
                await asyncio.sleep(0.5)
        await stack.stop_workers()
    return out.read_text() if out.exists() else "no snapshot written"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--warmup", type=int, default=5_000)
    parser.add_argument("--seconds", type=float, default=400.0)
    args = parser.parse_args()
    print(asyncio.run(run(args.messages, args.warmup, args.seconds)))


if __name__ == "__main__":
    main()
