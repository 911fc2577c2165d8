"""Two loops of the worker's step measured alone, another checkout's code against this one's.

`python -m bench.hot_loops --baseline DIR [--rounds 3]` runs, in a fresh interpreter per
checkout (DIR first on PYTHONPATH, then this one), alternating round after round:

- **dialog**: `dialog.advance` over the happy path, a different address and phone number
  for each customer (as real customers have), 1,000 customers a run; CPU per step.
- **redis batch**: `RedisBatch` on the local Redis with the processes' client options,
  20 concurrent callers each running a script with three keys and eleven arguments (the
  shape of the step's `begin`), 5,000 calls a run; CPU per call, the client's side only.

- **consume**: orderbot's `Consumer` on a quorum partition queue of its own (a fresh
  topology under a queue prefix of its own, deleted after), prefetch 64, a handler that
  does nothing; 20,000 messages published first, then consumed and acknowledged; CPU per
  message, the consuming process only.

None of them is the pipeline: they tell whether a change to one of these loops moved its own
cost, which the pipeline's noise on a shared machine hides. DIR must run on this
checkout's virtualenv (e.g. a `git archive` of the baseline commit).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def _texts(i: int) -> tuple[str, ...]:
    return (
        "Здравствуйте",
        f"ул. Киевская {i % 997}, кв {i % 89}",
        f"+996 555 {100 + i % 900} {100 + i % 7 * 100 + i % 89}",
        str(1 + i % 9),
        "да",
    )


def dialog_us_per_step(customers: int = 1000) -> float:
    from dialog.machine import advance
    from dialog.state import DialogState, Step

    def walk(i: int) -> None:
        state = DialogState()
        for text in _texts(i):
            state = advance(state, text).state
        if state.step is not Step.COMPLETED:
            raise RuntimeError(f"customer {i} did not finish: {state.step}")

    for i in range(200):
        walk(i)
    started = time.process_time()
    for i in range(customers):
        walk(10_000 + i)
    return (time.process_time() - started) / (customers * len(_texts(0))) * 1e6


async def batch_us_per_call(callers: int = 20, calls: int = 250) -> float:
    from redis.asyncio import Redis

    from orderbot.conversation.batch import RedisBatch

    client = Redis.from_url(
        REDIS_URL,
        decode_responses=True,
        socket_timeout=5,
        socket_connect_timeout=2,
        health_check_interval=10,
        retry_on_timeout=False,
    )
    prefix = f"bench-hot-loops:{uuid.uuid4().hex}"
    script = RedisBatch(client).script("return redis.call('SET', KEYS[1], ARGV[1], 'PX', 60000)")

    async def caller(i: int, n: int) -> None:
        keys = [f"{prefix}:{i}:state", f"{prefix}:{i}:lock", f"{prefix}:{i}:marker"]
        for j in range(n):
            await script(
                keys=keys,
                args=[f"m-{j}", 0.0166, 1.5, 60_000, "Привет", "x" * 40, -5, 3, 7, 9, 11],
            )

    try:
        await asyncio.gather(*(caller(i, 50) for i in range(callers)))
        started = time.process_time()
        await asyncio.gather(*(caller(i, calls) for i in range(callers)))
        return (time.process_time() - started) / (callers * calls) * 1e6
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def consume_us_per_message(messages: int = 20_000) -> float:
    from orderbot.amqp.consumer import Consumer, Delivery
    from orderbot.amqp.link import BrokerLink
    from orderbot.config.settings import Settings

    settings = Settings(_env_file=None, queue_prefix=f"bench-hot-{uuid.uuid4().hex[:8]}-")
    async with BrokerLink(settings, "bench") as broker:
        if not await broker.wait_connected(asyncio.Event()):
            raise RuntimeError("no broker")
        queue = broker.topology.partitions[0]
        try:
            body = b'{"text": "' + b"x" * 300 + b'"}'
            await asyncio.gather(
                *(
                    broker.publish(queue, body, message_id=f"m-{i}", headers={"x-tenant": "t"})
                    for i in range(messages)
                )
            )
            done = asyncio.Event()
            handled = 0

            async def handler(_: Delivery) -> None:
                nonlocal handled
                handled += 1
                if handled == messages:
                    done.set()

            stop = asyncio.Event()
            consumer = Consumer(broker, queue, handler, prefetch=64, shutdown_timeout=5)
            started = time.process_time()
            running = asyncio.create_task(consumer.run(stop))
            await done.wait()
            stop.set()
            await running
            return (time.process_time() - started) / messages * 1e6
        finally:
            channel = await broker.connection.channel()
            for name in broker.topology.all_queues:
                await channel.queue_delete(name)
            await channel.close()


def _measure() -> None:
    import logging

    import structlog
    import uvloop

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(
        json.dumps(
            {
                "dialog_us_per_step": dialog_us_per_step(),
                "batch_us_per_call": uvloop.run(batch_us_per_call()),
                "consume_us_per_message": uvloop.run(consume_us_per_message()),
            }
        )
    )


def _run(checkout: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}  # ahead of this checkout's install
    out = subprocess.run(  # by path: DIR need not have this file
        [sys.executable, str(Path(__file__).resolve()), "--measure"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", type=Path, help="the other checkout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        _measure()
        return
    if args.baseline is None:
        parser.error("--baseline DIR is needed")
    runs: dict[str, list[dict[str, float]]] = {"baseline": [], "this": []}
    for round_ in range(1, args.rounds + 1):
        for side, checkout in (("baseline", args.baseline.resolve()), ("this", ROOT)):
            result = _run(checkout)
            runs[side].append(result)
            print(
                f"round {round_} {side:8}: dialog {result['dialog_us_per_step']:.1f} µs/step, "
                f"redis batch {result['batch_us_per_call']:.1f} µs/call, "
                f"consume {result['consume_us_per_message']:.1f} µs/message",
                flush=True,
            )
    for name in ("dialog_us_per_step", "batch_us_per_call", "consume_us_per_message"):
        base = statistics.median(r[name] for r in runs["baseline"])
        this = statistics.median(r[name] for r in runs["this"])
        print(f"{name}: baseline {base:.1f}, this {this:.1f}, ratio {this / base:.2f}")


if __name__ == "__main__":
    main()
