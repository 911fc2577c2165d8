"""The HTTP load generator, run as its own process: `python -m bench.loadgen ...`.

Closed loop: `--concurrency` connections, each sending its next request when the
last one was answered; this finds the most a server does. Open loop: requests are
due at a fixed rate whatever the server does, and latency counts from when a
request was due, not when it went out, so a stalled server shows as queueing
latency instead of silently lowering the load (coordinated omission).

Bounded twice: by `--duration` (plus a drain bound) and by `--max-requests`.
Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from bench.bodies import HAPPY_PATH, chat2desk_body
from bench.httpclient import ConnectionPool, post_bytes
from bench.stats import summarize_ms

DRAIN_SECONDS = 10.0


class Load:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.head_path = args.path
        self.ids = itertools.count()
        self.rng = random.Random(args.seed)
        self.latencies: list[float] = []
        self.statuses: dict[str, int] = {}
        self.errors = 0
        self.sent = 0
        self.measure_from = 0.0
        self.measure_until = 0.0
        self.first_measured = 0
        self.timeline: list[tuple[float, float]] = []

    def next_request(self) -> bytes:
        n = next(self.ids)
        body = chat2desk_body(
            f"{self.args.run_id}-{n}",
            10**9 + self.rng.randrange(self.args.clients),
            HAPPY_PATH[n % len(HAPPY_PATH)],
        )
        return post_bytes(self.args.host, self.args.port, self.head_path, body)

    async def one(self, pool: ConnectionPool, due: float) -> None:
        data = self.next_request()
        self.sent += 1
        try:
            status = await pool.request(data)
        except Exception:
            self.errors += 1
            return
        done = time.perf_counter()
        if self.measure_from <= due < self.measure_until:
            key = str(status)
            self.statuses[key] = self.statuses.get(key, 0) + 1
            if 200 <= status < 300:
                self.latencies.append(done - due)
                if self.args.timeline:
                    self.timeline.append((due - self.measure_from, done - due))

    async def closed(self, pool: ConnectionPool, end: float) -> None:
        while (now := time.perf_counter()) < end and self.sent < self.args.max_requests:
            await self.one(pool, now)

    async def open(self, pool: ConnectionPool, start: float, end: float) -> None:
        interval = 1.0 / self.args.rate
        tasks: set[asyncio.Task[None]] = set()
        for i in itertools.count():
            due = start + i * interval
            if due >= end or i >= self.args.max_requests:
                break
            delay = due - time.perf_counter()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self.one(pool, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=DRAIN_SECONDS)
            for task in pending:
                task.cancel()
            self.errors += len(pending)


async def run(args: argparse.Namespace) -> tuple[dict[str, Any], list[tuple[float, float]]]:
    load = Load(args)
    limit = args.concurrency if args.mode == "closed" else args.max_connections
    pool = ConnectionPool(args.host, args.port, limit)
    cpu_start = time.process_time()
    start = time.perf_counter()  # uvloop's loop.time() ticks in whole milliseconds
    load.measure_from = start + args.warmup
    end = start + args.warmup + args.duration
    load.measure_until = end
    if args.mode == "closed":
        async with asyncio.timeout(args.warmup + args.duration + DRAIN_SECONDS):
            await asyncio.gather(*(load.closed(pool, end) for _ in range(args.concurrency)))
    else:
        await load.open(pool, start, end)
    pool.close()
    cpu = time.process_time() - cpu_start
    ok = len(load.latencies)
    result = {
        "mode": args.mode,
        "concurrency": args.concurrency if args.mode == "closed" else None,
        "offered_rate": args.rate if args.mode == "open" else None,
        "duration": args.duration,
        "sent": load.sent,
        "ok": ok,
        "errors": load.errors,
        "statuses": load.statuses,
        "rps": round(ok / args.duration, 1),
        "latency_ms": summarize_ms(load.latencies),
        "loadgen_cpu_s": round(cpu, 2),
    }
    return result, load.timeline


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--mode", choices=("closed", "open"), required=True)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--max-connections", type=int, default=256)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeline", help="write 'due_s latency_ms' per answered request here")
    return parser.parse_args(argv)


def main() -> None:
    args = parse(sys.argv[1:])
    try:
        import uvloop  # the generator's loop; the servers under test keep their own
    except ImportError:
        result, timeline = asyncio.run(run(args))
    else:
        result, timeline = uvloop.run(run(args))
    if args.timeline:
        lines = (f"{due:.6f} {latency * 1000:.3f}\n" for due, latency in timeline)
        Path(args.timeline).write_text("".join(lines))
    sys.stdout.buffer.write(orjson.dumps(result) + b"\n")


if __name__ == "__main__":
    main()
