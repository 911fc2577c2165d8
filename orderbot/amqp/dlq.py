"""The DLQ as operators see it: list, replay and purge parked messages.

Shared by `orderbot dlq list|replay|purge` and the operator console (which passes its
tenant, so it sees and replays that tenant's messages only).

Messages are read with basic.get and held unacknowledged; a message leaves the
DLQ (ack) only after its replay was confirmed by the broker, and everything not
acked returns to the DLQ when the channel closes. An interrupted replay therefore
loses nothing; at worst one message is replayed twice, which the worker's dedupe
(for customer messages) absorbs.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from orderbot.amqp import dead_letters
from orderbot.amqp.dead_letters import RetryStory
from orderbot.amqp.link import BrokerLink
from orderbot.amqp.topology import Topology
from orderbot.envelopes import InboundMessage, decode, utcnow
from orderbot.errors import PoisonMessage


@dataclass(frozen=True)
class ParkedMessage:
    message_id: str
    age_seconds: float
    tenant: str
    client: str
    reason: str
    attempts: int
    last_error: str
    source_queue: str

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _death(message: AbstractIncomingMessage) -> dict[str, Any]:
    deaths = (message.headers or {}).get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return deaths[0]
    return {}


def describe(message: AbstractIncomingMessage) -> ParkedMessage:
    headers = message.headers or {}
    death = _death(message)
    reason = headers.get(dead_letters.REASON)
    if reason is None and death:
        reason = f"broker dead-lettered: {death.get('reason')} (x-delivery-count limit)"
    story = RetryStory.from_headers(headers)
    attempts = story.attempts
    if dead_letters.ATTEMPTS not in headers:
        delivered = headers.get("x-delivery-count")
        attempts = delivered + 1 if isinstance(delivered, int) else 0
    timestamp = message.timestamp
    if isinstance(timestamp, datetime):
        age = (utcnow() - timestamp.replace(tzinfo=timestamp.tzinfo or UTC)).total_seconds()
    else:
        age = 0.0
    return ParkedMessage(
        message_id=message.message_id or "",
        age_seconds=round(age, 1),
        tenant=str(headers.get(dead_letters.TENANT, "")),
        client=str(headers.get(dead_letters.CLIENT, "")),
        reason=str(reason or "unknown"),
        attempts=attempts,
        last_error=story.last_error,
        source_queue=str(headers.get(dead_letters.SOURCE_QUEUE) or death.get("queue") or ""),
    )


@contextlib.asynccontextmanager
async def _dlq(broker: BrokerLink, held: bool = False) -> AsyncIterator[AbstractQueue]:
    await broker.wait_connected()
    channel = await broker.connection.channel()
    try:
        name = broker.topology.held if held else broker.topology.dlq
        yield await channel.declare_queue(name, passive=True)
    finally:
        await channel.close()  # returns every unacked message to the DLQ


async def _fetch(queue: AbstractQueue, limit: int) -> AsyncIterator[AbstractIncomingMessage]:
    """At most the messages parked when the tool started: a replayed message that
    fails again and comes back must not be fetched (and replayed) again in this run."""
    parked_at_start = int(queue.declaration_result.message_count or 0)
    for _ in range(min(limit, parked_at_start)):
        message = await queue.get(no_ack=False, fail=False)
        if message is None:
            return
        yield message


async def list_parked(
    broker: BrokerLink, *, limit: int = 1000, held: bool = False, tenant: str | None = None
) -> list[ParkedMessage]:
    """The DLQ's messages, or (`held`) what customers sent past their budget; with
    `tenant`, only the messages parked with that tenant's header (of the first `limit`)."""
    async with _dlq(broker, held) as queue:
        parked = [describe(message) async for message in _fetch(queue, limit)]
    return [p for p in parked if tenant is None or p.tenant == tenant]


def _replay_target(topology: Topology, source_queue: str, body: bytes) -> str:
    """A customer message goes to its customer's partition as it is now (the partition
    count may have changed since it was parked); a reply to the outbox."""
    if not topology.is_messages_queue(source_queue):
        return topology.outbox
    try:
        inbound = decode(InboundMessage, body)
    except PoisonMessage:  # unreadable still: any partition will park it again
        return topology.partitions[0]
    return topology.messages_for(inbound.conversation.key)


async def replay(
    broker: BrokerLink,
    *,
    message_id: str | None,
    limit: int = 100_000,
    held: bool = False,
    tenant: str | None = None,
) -> int:
    """Send parked messages back (all, or the one with `message_id`; with `tenant`, only
    that tenant's); returns the count.

    A customer message goes back to `messages`; a reply goes to `outbox` with its
    attempts reset, so it gets the whole retry schedule again.
    """
    replayed = 0
    topology = broker.topology
    async with _dlq(broker, held) as queue:
        async for message in _fetch(queue, limit):
            if message_id is not None and message.message_id != message_id:
                continue
            parked = describe(message)
            if tenant is not None and parked.tenant != tenant:
                continue
            target = _replay_target(topology, parked.source_queue, message.body)
            headers: dict[str, object] = {"x-replayed-at": utcnow().isoformat()}
            if target == topology.outbox:
                fresh = RetryStory(
                    first_failure=utcnow(), last_error=f"replayed from DLQ after: {parked.reason}"
                )
                headers.update(fresh.to_headers())
            await broker.publish(
                target,
                message.body,
                message_id=message.message_id or parked.message_id,
                correlation_id=message.correlation_id,
                headers=headers,
            )
            await message.ack()
            replayed += 1
            if message_id is not None:
                break
    return replayed


async def purge(broker: BrokerLink, *, held: bool = False) -> int:
    async with _dlq(broker, held) as queue:
        result = await queue.purge()
        return int(result.message_count or 0)
