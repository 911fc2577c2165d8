"""Looking into the test's queues with plain aio-pika."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage


async def depth(channel: AbstractChannel, queue: str) -> int:
    declared = await channel.declare_queue(queue, passive=True)
    return int(declared.declaration_result.message_count or 0)


async def take_all(channel: AbstractChannel, queue: str) -> list[AbstractIncomingMessage]:
    """Consume and ack everything currently in `queue`."""
    q = await channel.get_queue(queue, ensure=False)
    taken = []
    while (message := await q.get(no_ack=True, fail=False)) is not None:
        taken.append(message)
    return taken


async def wait_depth(
    channel: AbstractChannel, queue: str, expected: int, timeout: float = 30
) -> None:
    """Wait until the broker reports `expected` ready messages in `queue`."""
    async with asyncio.timeout(timeout):
        while await depth(channel, queue) != expected:
            await asyncio.sleep(0.02)


async def publish_raw(
    channel: AbstractChannel,
    queue: str,
    body: bytes,
    *,
    message_id: str,
    headers: dict[str, Any] | None = None,
) -> None:
    await channel.default_exchange.publish(
        aio_pika.Message(
            body,
            message_id=message_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=headers,
        ),
        queue,
    )
