"""The ceilings our figures are divided by, each run as its own process.

`http`: an aiohttp handler that reads the body and answers 200: the most this
loop and HTTP stack give on this machine. `publish`: the same handler doing one
persistent publish with aio-pika and waiting for the broker's confirm, into a
quorum queue declared like `messages`: the most any design keeping guarantee 1
can give. `consume`: an aio-pika consumer that only acks, from a quorum queue
filled beforehand, at the worker's prefetch: the most any worker can take.

They run on the same event loop as orderbot's processes (`--uvloop` when those
use uvloop), so a ratio measures our code, not a loop swap.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Coroutine
from typing import Any

import aio_pika
import orjson
from aiohttp import web
from pamqp.common import FieldTable


def quorum_arguments(max_length: int) -> FieldTable:
    """The arguments of orderbot's `messages` queue, minus the DLQ routing."""
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": 20,
        "x-max-length": max_length,
        "x-overflow": "reject-publish",
    }


async def serve(args: argparse.Namespace) -> None:
    app = web.Application()
    connection: aio_pika.abc.AbstractRobustConnection | None = None
    if args.kind == "publish":
        connection = await aio_pika.connect_robust(args.amqp_url)
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await channel.declare_queue(
            args.queue, durable=True, arguments=quorum_arguments(args.max_length)
        )
        exchange = channel.default_exchange

        async def publish(request: web.Request) -> web.Response:
            body = await request.read()
            await exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                args.queue,
                mandatory=True,
            )
            return web.json_response({"status": "queued"})

        app.router.add_post("/webhook/chat2desk/{token}", publish)
    else:

        async def ok(request: web.Request) -> web.Response:
            await request.read()
            return web.json_response({"status": "queued"})

        app.router.add_post("/webhook/chat2desk/{token}", ok)

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        if connection is not None:
            await connection.close()


async def consume(args: argparse.Namespace) -> dict[str, Any]:
    """Fill the queue (untimed), then time consuming and acking all of it."""
    connection = await aio_pika.connect_robust(args.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(
            args.queue, durable=True, arguments=quorum_arguments(args.max_length)
        )
        await queue.purge()
        body = orjson.dumps({"v": 1, "message_id": "x" * 24, "text": "Здравствуйте" * 4})
        batch: list[Coroutine[Any, Any, Any]] = []
        for i in range(args.count):
            message = aio_pika.Message(
                body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=str(i)
            )
            batch.append(channel.default_exchange.publish(message, args.queue))
            if len(batch) >= 500:
                await asyncio.gather(*batch)
                batch.clear()
        await asyncio.gather(*batch)

        consumer_channel = await connection.channel()
        await consumer_channel.set_qos(prefetch_count=args.prefetch)
        consumer_queue = await consumer_channel.declare_queue(args.queue, passive=True)
        done = asyncio.Event()
        received = 0

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal received
            await message.ack()
            received += 1
            if received >= args.count:
                done.set()

        cpu_start = time.process_time()
        start = time.monotonic()
        tag = await consumer_queue.consume(on_message)
        async with asyncio.timeout(args.timeout):
            await done.wait()
        elapsed = time.monotonic() - start
        cpu = time.process_time() - cpu_start
        await consumer_queue.cancel(tag)
        await channel.queue_delete(args.queue)
    return {
        "count": received,
        "prefetch": args.prefetch,
        "seconds": round(elapsed, 3),
        "rate": round(received / elapsed, 1),
        "cpu_s": round(cpu, 2),
    }


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=("http", "publish", "consume"))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--amqp-url", default="amqp://guest:guest@localhost:5672/")
    parser.add_argument("--queue", default="bench-bare")
    parser.add_argument("--max-length", type=int, default=100_000)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--prefetch", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--uvloop", action="store_true")
    return parser.parse_args(argv)


def main() -> None:
    args = parse(sys.argv[1:])
    if args.uvloop:
        import uvloop

        uvloop.install()
    if args.kind == "consume":
        result = asyncio.run(consume(args))
        sys.stdout.buffer.write(orjson.dumps(result) + b"\n")
    else:
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
