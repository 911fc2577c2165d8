"""RabbitMQ's own CPU per message for a bare publish + consume + ack, at a set rate.

`python -m bench.rabbit_floor [--rate 400] [--seconds 10] [--queues 16] [--type quorum]
[--ack single|multiple|later] [--no-confirm]` publishes persistent messages at `--rate` a
second, spread over `--queues` queues (declared like orderbot's partitions, minus the
DLQ routing), each publish waiting for its confirm, and consumes them on one channel
per queue at prefetch 10, acking each at once (`single`) or, every 50 ms, everything
done so far with one `multiple` ack per channel (or one ack each, `later`: the same
moments without `multiple`, which tells the ack frames' cost from the moments'). It
reports the broker's CPU (all its processes, so a quiet broker is needed) per message
consumed: the floor under the
pipeline's RabbitMQ cost per step, at the same rate, with nothing of orderbot in it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from pamqp.common import FieldTable

from bench.harness import services_cpu

BODY = json.dumps({"v": 1, "message_id": "x" * 24, "text": "Здравствуйте" * 20}).encode()


def arguments(kind: str) -> FieldTable:
    if kind == "classic":
        return {"x-queue-type": "classic"}
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": 20,
        "x-max-length": 100_000,
        "x-overflow": "reject-publish",
        "x-single-active-consumer": True,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    prefix = f"floor-{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}.{i}" for i in range(args.queues)]
    connection = await aio_pika.connect(args.amqp_url)
    consumer_connection = await aio_pika.connect(args.amqp_url)
    consumed = 0
    target: int | None = None  # messages to consume, once all are published
    all_in = asyncio.Event()
    try:
        publisher = await connection.channel(publisher_confirms=args.confirm)
        for name in names:
            await publisher.declare_queue(name, durable=True, arguments=arguments(args.type))
        pending: dict[aio_pika.abc.AbstractChannel, list[AbstractIncomingMessage]] = {}

        for name in names:
            channel = await consumer_connection.channel()
            await channel.set_qos(prefetch_count=10)
            queue = await channel.declare_queue(name, passive=True)

            async def on_message(message: AbstractIncomingMessage, ch: Any = channel) -> None:
                nonlocal consumed
                consumed += 1
                if target is not None and consumed >= target:
                    all_in.set()
                if args.ack == "single":
                    await message.ack()
                else:
                    pending.setdefault(ch, []).append(message)

            await queue.consume(on_message)

        async def flush_acks() -> None:
            while True:
                await asyncio.sleep(0.05)
                for channel in list(pending):
                    messages = pending.pop(channel)
                    if args.ack == "multiple":
                        await messages[-1].ack(multiple=True)
                    else:  # "later": the same moments, one ack each
                        for message in messages:
                            await message.ack()

        flusher = asyncio.create_task(flush_acks())
        exchange = publisher.default_exchange
        tick = 0.01
        per_tick = args.rate * tick
        sent, owed = 0, 0.0
        cpu0, t0 = services_cpu()["rabbitmq"], time.monotonic()
        consumed0 = consumed
        inflight: set[asyncio.Task[Any]] = set()
        while time.monotonic() - t0 < args.seconds:
            owed += per_tick
            while owed >= 1:
                owed -= 1
                message = aio_pika.Message(
                    BODY,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=str(sent),
                    content_type="application/json",
                )
                task = asyncio.create_task(
                    exchange.publish(message, names[sent % len(names)], mandatory=True)
                )
                inflight.add(task)
                task.add_done_callback(inflight.discard)
                sent += 1
            await asyncio.sleep(tick)
        if inflight:
            await asyncio.gather(*inflight)
        target = consumed0 + sent
        if consumed >= target:
            all_in.set()
        async with asyncio.timeout(10):
            await all_in.wait()
        await asyncio.sleep(0.06)  # the last multiple acks
        elapsed = time.monotonic() - t0
        cpu = services_cpu()["rabbitmq"] - cpu0
        flusher.cancel()
        got = consumed - consumed0
        for name in names:
            await publisher.queue_delete(name)
    finally:
        await consumer_connection.close()
        await connection.close()
    return {
        "type": args.type,
        "queues": args.queues,
        "ack": args.ack,
        "confirm": args.confirm,
        "rate": round(got / elapsed),
        "messages": got,
        "rabbitmq_cpu_us_per_message": round(cpu / max(got, 1) * 1e6),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--amqp-url", default="amqp://guest:guest@localhost:5672/")
    parser.add_argument("--rate", type=float, default=400)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--queues", type=int, default=16)
    parser.add_argument("--type", choices=("quorum", "classic"), default="quorum")
    parser.add_argument("--ack", choices=("single", "multiple", "later"), default="single")
    parser.add_argument("--no-confirm", dest="confirm", action="store_false")
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
