"""The broker's queues, their arguments, and their declaration.

Every process declares the whole topology at start. Declaring is idempotent, so
the first process up on a fresh broker creates everything and no start order is
needed. Arguments of an existing queue cannot change: a deployment that changes
`MESSAGES_DELIVERY_LIMIT` must delete the queue first (docs/operations.md).

Customer messages are partitioned: `messages.0` … `messages.{N-1}`, each a quorum queue
with a single active consumer, and a customer's messages always go to the same one (a
stable hash of the conversation key). One consumer at a time per partition, plus the
worker's arrival-order lock per customer, applies a customer's steps in the order the
broker accepted them, whatever the number of workers. `messages` (no suffix) is the
queue of deployments before partitioning; `orderbot messages repartition` empties it.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from aio_pika.abc import AbstractChannel
from pamqp.common import FieldTable

from orderbot.config.settings import Settings


@dataclass(frozen=True)
class Topology:
    messages: str  # the partitions' common name; also the unpartitioned queue of old
    partitions: tuple[str, ...]
    outbox: str
    dlq: str
    held: str  # what a customer sent past their budget: kept, not failed
    delay_tiers: tuple[tuple[str, int], ...]
    delivery_limit: int
    max_length: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Topology:
        tiers = tuple(
            (settings.queue(f"outbox.delay.{_ms(delay)}ms"), _ms(delay))
            for delay in sorted(set(settings.outbox_delays))
        )
        messages = settings.queue("messages")
        return cls(
            messages=messages,
            partitions=tuple(f"{messages}.{i}" for i in range(settings.messages_partitions)),
            outbox=settings.queue("outbox"),
            dlq=settings.queue("dlq"),
            held=settings.queue("held"),
            delay_tiers=tiers,
            delivery_limit=settings.messages_delivery_limit,
            max_length=settings.messages_max_length,
        )

    def messages_for(self, conversation_key: str) -> str:
        """The queue a customer's messages go to. Every publisher of a customer message
        (the server, its spool, a DLQ replay, the reconciler) routes through here, so
        one customer's messages always share a queue and keep their order.

        CRC-32: stable across processes, versions and machines (Python's hash() is
        salted per process), and cheap on the path every webhook takes."""
        return partition_of(self.partitions, conversation_key)

    def is_messages_queue(self, name: str) -> bool:
        """A customer-message queue: a partition, one of a former partition count, or
        the unpartitioned queue of old."""
        if name == self.messages:
            return True
        base, _, index = name.rpartition(".")
        return base == self.messages and index.isdigit()

    def delay_queue(self, delay: timedelta) -> str:
        """The tier holding messages for `delay` (the nearest declared one not shorter)."""
        wanted = _ms(delay)
        for name, ms in self.delay_tiers:
            if ms >= wanted:
                return name
        return self.delay_tiers[-1][0]

    @property
    def all_queues(self) -> tuple[str, ...]:
        return (
            *self.partitions,
            self.outbox,
            self.dlq,
            self.held,
            *(name for name, _ in self.delay_tiers),
        )


def partition_of(partitions: Sequence[str], conversation_key: str) -> str:
    return partitions[zlib.crc32(conversation_key.encode()) % len(partitions)]


def _ms(delay: timedelta) -> int:
    return max(1, round(delay.total_seconds() * 1000))


def _dead_letter_to(queue: str) -> FieldTable:
    # at-least-once dead-lettering: the broker keeps a message until the target queue
    # confirmed it, so a crash while dead-lettering cannot drop it. It requires
    # reject-publish overflow on the source queue.
    return {
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


async def declare_topology(channel: AbstractChannel, topology: Topology) -> None:
    await channel.declare_queue(topology.dlq, durable=True, arguments={"x-queue-type": "classic"})
    await channel.declare_queue(topology.held, durable=True, arguments={"x-queue-type": "classic"})
    work_queue: FieldTable = {
        "x-queue-type": "quorum",
        "x-delivery-limit": topology.delivery_limit,
        "x-max-length": topology.max_length,
        **_dead_letter_to(topology.dlq),
    }
    partition: FieldTable = {**work_queue, "x-single-active-consumer": True}
    for name in topology.partitions:
        await channel.declare_queue(name, durable=True, arguments=partition)
    await channel.declare_queue(topology.outbox, durable=True, arguments=work_queue)
    for name, ttl_ms in topology.delay_tiers:
        await channel.declare_queue(
            name,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-message-ttl": ttl_ms,
                **_dead_letter_to(topology.outbox),
            },
        )
