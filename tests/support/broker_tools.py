"""Looking into the test's queues with plain aio-pika."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from orderbot.amqp.consumer import Consumer
from orderbot.amqp.topology import Topology, partition_of
from orderbot.config.settings import Settings
from orderbot.envelopes import InboundMessage, decode
from orderbot.errors import PoisonMessage

Queues = str | tuple[str, ...]  # one queue, or several read as one (the partitions)


def messages_queues(settings: Settings) -> tuple[str, ...]:
    """The partitions of `messages`: where the server puts customer messages."""
    return Topology.from_settings(settings).partitions


def _names(queue: Queues) -> tuple[str, ...]:
    return (queue,) if isinstance(queue, str) else queue


async def depth(channel: AbstractChannel, queue: Queues) -> int:
    total = 0
    for name in _names(queue):
        declared = await channel.declare_queue(name, passive=True)
        total += int(declared.declaration_result.message_count or 0)
    return total


async def take_all(channel: AbstractChannel, queue: Queues) -> list[AbstractIncomingMessage]:
    """Consume and ack everything currently in `queue` (queue by queue).

    By a consumer, not basic.get: a single-active-consumer quorum queue (a partition)
    refuses basic.get."""
    taken: list[AbstractIncomingMessage] = []
    for name in _names(queue):
        q = await channel.declare_queue(name, passive=True)
        count = int(q.declaration_result.message_count or 0)
        if count == 0:
            continue
        async with q.iterator(no_ack=True) as messages:
            async for message in messages:
                taken.append(message)
                count -= 1
                if count == 0:
                    break
    return taken


async def wait_depth(
    channel: AbstractChannel, queue: Queues, expected: int, timeout: float = 30
) -> None:
    """Wait until the broker reports `expected` ready messages in `queue`."""
    async with asyncio.timeout(timeout):
        while await depth(channel, queue) != expected:
            await asyncio.sleep(0.02)


def _route(partitions: tuple[str, ...], body: bytes) -> str:
    """The partition a body goes to, as the server would route it (poison: the first)."""
    try:
        inbound = decode(InboundMessage, body)
    except PoisonMessage:
        return partitions[0]
    return partition_of(partitions, inbound.conversation.key)


async def publish_raw(
    channel: AbstractChannel,
    queue: Queues,
    body: bytes,
    *,
    message_id: str,
    headers: dict[str, Any] | None = None,
) -> None:
    """Publish as-is to `queue`, or (the partitions) to the body's customer's partition."""
    queue = queue if isinstance(queue, str) else _route(queue, body)
    await channel.default_exchange.publish(
        aio_pika.Message(
            body,
            message_id=message_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=headers,
        ),
        queue,
    )


def cancel_channel_reader(channel: aiormq.Channel) -> None:
    """Cancel the task that reads `channel`'s frames, as aiormq does to every task of a
    connection it tears down: the channel closes on this side only, and every publish it
    has not confirmed yet is rejected with CancelledError."""
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        frame = getattr(coro, "cr_frame", None)
        if (
            getattr(coro, "__qualname__", "") == "Channel._reader"
            and frame is not None
            and frame.f_locals.get("self") is channel
        ):
            task.cancel()
            return
    raise LookupError(f"no reader task for {channel!r}")


async def close_from_broker(connection_name: str) -> None:
    """Have the broker close the connection named `connection_name` (unique to the test:
    BrokerLink names its connection after its role), as `rabbitmqctl close_connection`
    does: the client learns of it from the broker's Close, as in a broker restart."""
    listing = await _rabbitmqctl(
        "--no-table-headers", "list_connections", "pid", "client_properties"
    )
    pids = [line.split("\t")[0] for line in listing.splitlines() if f'"{connection_name}"' in line]
    assert len(pids) == 1, f"the broker lists {len(pids)} connections named {connection_name}"
    await _rabbitmqctl("close_connection", pids[0], "closed by the test")


async def _rabbitmqctl(*arguments: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        "-q",
        *arguments,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode(errors="replace")
    return stdout.decode()


def unconnected_consumer(handler: Any, *, shutdown_timeout: float = 5) -> Consumer:
    """A consumer of queue `q` with no broker behind it, for tests that hand it
    deliveries (`_on_message`) and watch its handlers, acks and drain."""
    return Consumer(None, "q", handler, prefetch=10, shutdown_timeout=shutdown_timeout)  # type: ignore[arg-type]
