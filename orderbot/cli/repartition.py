"""`orderbot messages repartition`: customer messages waiting in a queue that is no
longer a partition are moved to their customer's partition, none lost.

Such queues are the unpartitioned `messages` of a deployment from before partitioning
and the partitions past MESSAGES_PARTITIONS after the count was lowered. Each message
is published, confirmed, to its new queue before it is acknowledged in the old one, in
the old queue's order, so a crash in the middle duplicates at most one message (the
worker's dedupe skips it) and loses none.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiormq
from aio_pika.abc import AbstractChannel, AbstractQueue

from orderbot.amqp.link import BrokerLink
from orderbot.amqp.topology import Topology
from orderbot.envelopes import InboundMessage, decode
from orderbot.errors import PoisonMessage

# Headers the broker sets for its own bookkeeping: they describe the old queue.
_BROKER_HEADERS = frozenset(
    {
        "x-delivery-count",
        "x-death",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-first-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        "x-last-death-exchange",
    }
)


def target(topology: Topology, body: bytes) -> str:
    try:
        inbound = decode(InboundMessage, body)
    except PoisonMessage:  # a worker parks it with its reason, from any partition
        return topology.partitions[0]
    return topology.messages_for(inbound.conversation.key)


async def _existing(broker: BrokerLink, name: str) -> bool:
    channel = await broker.connection.channel()
    try:
        await channel.declare_queue(name, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return False
    finally:
        if not channel.is_closed:
            await channel.close()
    return True


async def sources(broker: BrokerLink) -> list[str]:
    """The unpartitioned queue and the partitions past the count, where they exist."""
    topology = broker.topology
    found = [topology.messages] if await _existing(broker, topology.messages) else []
    index = len(topology.partitions)
    while await _existing(broker, f"{topology.messages}.{index}"):
        found.append(f"{topology.messages}.{index}")
        index += 1
    return found


async def _move(broker: BrokerLink, queue: AbstractQueue) -> int:
    """Move what `queue` held when this began, by a consumer (a partition, a
    single-active-consumer queue, refuses basic.get)."""
    left = int(queue.declaration_result.message_count or 0)
    moved = 0
    if left == 0:
        return moved
    async with queue.iterator() as messages:
        async for message in messages:
            headers: Mapping[str, object] = {
                k: v for k, v in (message.headers or {}).items() if k not in _BROKER_HEADERS
            }
            await broker.publish(
                target(broker.topology, message.body),
                message.body,
                message_id=message.message_id or "",
                correlation_id=message.correlation_id,
                headers=headers,
            )
            await message.ack()
            moved += 1
            if moved == left:
                break
    return moved


async def repartition(broker: BrokerLink) -> dict[str, int]:
    """Moved messages per source queue."""
    await broker.wait_connected()
    moved: dict[str, int] = {}
    for name in await sources(broker):
        channel: AbstractChannel = await broker.connection.channel()
        try:
            await channel.set_qos(prefetch_count=100)
            queue = await channel.declare_queue(name, passive=True)
            moved[name] = await _move(broker, queue)
        finally:
            await channel.close()
    return moved
