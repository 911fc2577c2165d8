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

Quorum queues are created with `x-quorum-initial-group-size` from AMQP_QUORUM_GROUP_SIZE.
The broker caps it by the cluster it has (3 on one node is a queue on that node), which
is why the setting is declared as it is rather than capped here by a count of nodes:
every process of a deployment declares the same arguments whatever nodes it was given or
found up, and a cluster that grows keeps its queues' declaration. The group size only
matters when a queue is created, but RabbitMQ compares it like any argument: a queue
made before the setting existed (none) or under another value refuses a declaration with
this one (PRECONDITION_FAILED). So each quorum queue is first declared on a scratch
channel; when the broker names the group size as the difference, the queue's own value
is declared instead, and any other difference still stops the process.

Every queue is a quorum queue, the DLQ and the held queue included: a classic queue
lives on one node, and while that node is down every declaration of it is refused, so
no process could reconnect anywhere, and what it parked would be out of reach. A DLQ or
held queue made classic by an earlier version stays classic (declared as it is, with a
warning): moving its messages is the operator's (docs/scaling.md).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import aiormq
import structlog
from aio_pika.abc import AbstractChannel
from pamqp.common import FieldTable

from orderbot.config.settings import Settings

log = structlog.get_logger(__name__)

GROUP_SIZE = "x-quorum-initial-group-size"
# The arguments the DLQ and the held queue had before they were quorum queues.
CLASSIC: FieldTable = {"x-queue-type": "classic"}
# RabbitMQ's words for a difference: "inequivalent arg 'x-queue-type' for queue 'q' in
# vhost '/': received 'quorum' but current is 'classic'"; the current value may also
# read none, '3', or the value '3' of type 'long'.
_DIFFERENCE = re.compile(
    r"inequivalent arg '(?P<arg>[^']+)'.* but current is "
    r"(?:none|(?:the value )?'(?P<current>[^']*)')"
)
_SETTLE_TRIES = 3  # each try can settle one difference: the type, then the group size


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
    quorum_group_size: int = 3

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
            quorum_group_size=settings.amqp_quorum_group_size,
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


def queue_arguments(topology: Topology) -> list[tuple[str, FieldTable]]:
    """Every queue of the topology with the arguments it is created with, in the order
    of declaration (the dead-letter targets first)."""
    quorum: FieldTable = {"x-queue-type": "quorum", GROUP_SIZE: topology.quorum_group_size}
    work_queue: FieldTable = {
        **quorum,
        "x-delivery-limit": topology.delivery_limit,
        "x-max-length": topology.max_length,
        **_dead_letter_to(topology.dlq),
    }
    partition: FieldTable = {**work_queue, "x-single-active-consumer": True}
    return [
        (topology.dlq, quorum),
        (topology.held, quorum),
        *((name, partition) for name in topology.partitions),
        (topology.outbox, work_queue),
        *(
            (name, {**quorum, "x-message-ttl": ttl_ms, **_dead_letter_to(topology.outbox)})
            for name, ttl_ms in topology.delay_tiers
        ),
    ]


async def declare_topology(channel: AbstractChannel, topology: Topology) -> None:
    """Declare every queue on `channel` (a robust one declares them again after a
    reconnect), each quorum queue with the group size it has, if it exists already."""
    scratch = _Scratch(channel)
    try:
        for name, arguments in queue_arguments(topology):
            if GROUP_SIZE in arguments:
                arguments = await scratch.settle(name, arguments)
            await channel.declare_queue(name, durable=True, arguments=arguments)
    finally:
        await scratch.close()


class _Scratch:
    """Channels of the connection under `channel`, bare aiormq ones: a refused
    declaration closes them, and unlike aio-pika's robust channels nothing reopens
    them and declares again behind our back."""

    def __init__(self, channel: AbstractChannel) -> None:
        self._channel = channel
        self._scratch: aiormq.abc.AbstractChannel | None = None

    async def _open(self) -> aiormq.abc.AbstractChannel:
        if self._scratch is None or self._scratch.is_closed:
            underlay = await self._channel.get_underlay_channel()
            self._scratch = await underlay.connection.channel()
        return self._scratch

    async def settle(self, name: str, arguments: FieldTable) -> FieldTable:
        """`arguments`, or what the queue was made with where the difference is one a
        queue may keep: its group size (any, or none), or, for a queue that was classic
        before it was made a quorum queue, its classic type."""
        for _ in range(_SETTLE_TRIES):
            try:
                await (await self._open()).queue_declare(name, durable=True, arguments=arguments)
            except aiormq.exceptions.ChannelPreconditionFailed as exc:
                difference = _DIFFERENCE.search(str(exc))
                kept = _kept(name, arguments, difference)
                if kept is None:
                    raise  # another argument differs: declaring it is refused all the same
                arguments = kept
            else:
                return arguments
        return arguments

    async def close(self) -> None:
        if self._scratch is not None and not self._scratch.is_closed:
            await self._scratch.close()


def _kept(name: str, arguments: FieldTable, difference: re.Match[str] | None) -> FieldTable | None:
    """The arguments to declare instead, after the broker named `difference`; None when
    it is one this process must not paper over."""
    if difference is None:
        return None
    arg, current = difference.group("arg"), difference.group("current")
    if arg == GROUP_SIZE and (current is None or current.isdigit()):
        log.info(
            "quorum_group_size_kept",
            queue=name,
            group_size=int(current) if current else None,
            wanted=arguments.get(GROUP_SIZE),
        )
        settled = {k: v for k, v in arguments.items() if k != GROUP_SIZE}
        return settled if current is None else {**settled, GROUP_SIZE: int(current)}
    quorum_only = arguments.keys() <= {"x-queue-type", GROUP_SIZE}  # the DLQ, held
    if arg == "x-queue-type" and current == "classic" and quorum_only:
        log.warning("queue_not_replicated", queue=name, queue_type="classic")
        return CLASSIC
    return None
