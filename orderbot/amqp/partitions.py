"""The partitions of `messages`, shared among the live workers.

Every worker keeps its place in a roll call and consumes the partitions that fall to
it: the live workers sorted by id, partition p goes to the one at rank p mod W. Same
roll call, same answer everywhere, and the shares differ by one partition at most.

Each partition is a single-active-consumer queue, so two workers that briefly disagree
on the roll call (one has seen a heartbeat the other has not yet) never consume one
partition at once: the newcomer waits in line and the broker activates it when the
owner lets go. A worker lets go by closing the partition's channel (Consumer's
`hand_over`), which puts the messages still unacknowledged back at the head of the
queue for the next owner. A hand-over costs those messages one delivery count each.

A worker that stops leaves the roll call first, so its partitions move within a
heartbeat. One that dies unannounced (SIGKILL, a host gone) keeps its place until it
missed three heartbeats: its partitions wait that long, with their messages safe in
the broker. A roll call that cannot be read (Redis down) changes nothing: a worker
keeps what it has, and the broker still lets one consumer at a time take a partition.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

import structlog

from orderbot.amqp.consumer import Consumer, Handler
from orderbot.amqp.link import BrokerLink
from orderbot.errors import is_transient
from orderbot.runtime import metrics
from orderbot.runtime.waiting import sleep_unless_set

log = structlog.get_logger(__name__)

MISSED_BEATS = 3  # a member that missed this many heartbeats is taken for gone


class RollCall(Protocol):
    """Who is alive. `conversation/roll_call.py` keeps it in Redis."""

    async def beat(self, member: str, ttl: timedelta) -> list[str]:
        """Renew `member` for `ttl`; the live members, sorted."""

    async def leave(self, member: str) -> None: ...


def share(live: Sequence[str], member: str, partitions: Sequence[str]) -> frozenset[str]:
    """The partitions `member` consumes when `live` (sorted) are the workers."""
    if member not in live:
        return frozenset()
    rank, count = live.index(member), len(live)
    return frozenset(name for i, name in enumerate(partitions) if i % count == rank)


def member_id() -> str:
    """Unique per process start, readable in the roll call: host, pid, a random tail."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class _Subscription:
    consumer: Consumer
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class PartitionedConsumer:
    def __init__(
        self,
        broker: BrokerLink,
        roll_call: RollCall,
        handler: Handler,
        *,
        prefetch: int,
        shutdown_timeout: float,
        heartbeat: timedelta,
        member: str | None = None,
    ) -> None:
        self._broker = broker
        self._roll_call = roll_call
        self._handler = handler
        self._prefetch = prefetch
        self._shutdown_timeout = shutdown_timeout
        self._heartbeat = heartbeat
        self.member = member or member_id()
        self._owned: dict[str, _Subscription] = {}
        self._letting_go: set[asyncio.Task[None]] = set()

    @property
    def owned(self) -> frozenset[str]:
        return frozenset(self._owned)

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the roll call until `stop` is set, then let every partition go."""
        if not await self._broker.wait_connected(stop):
            return
        partitions = self._broker.topology.partitions
        ttl = self._heartbeat * MISSED_BEATS
        try:
            while not stop.is_set():
                try:
                    live = await self._roll_call.beat(self.member, ttl)
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    log.warning("roll_call_unavailable", error=repr(exc))
                else:
                    metrics.ROLL_CALL_WORKERS.set(len(live))
                    self._follow(share(live, self.member, partitions))
                self._restart_failed()
                await sleep_unless_set(self._heartbeat.total_seconds(), stop)
        finally:
            try:
                await self._roll_call.leave(self.member)
            except Exception as exc:  # the others drop it after MISSED_BEATS anyway
                log.warning("roll_call_leave_failed", error=repr(exc))
            self._follow(frozenset())
            if self._letting_go:
                await asyncio.gather(*self._letting_go, return_exceptions=True)
            log.info("partitions_released")

    def _follow(self, wanted: frozenset[str]) -> None:
        gone = sorted(self._owned.keys() - wanted)
        new = sorted(wanted - self._owned.keys())
        for name in gone:
            self._let_go(name)
        for name in new:
            self._take(name)
        if gone or new:
            log.info("partitions_moved", taken=new, released=gone, owned=len(self._owned))

    def _take(self, name: str) -> None:
        consumer = Consumer(
            self._broker,
            name,
            self._handler,
            prefetch=self._prefetch,
            shutdown_timeout=self._shutdown_timeout,
            hand_over=True,
        )
        subscription = _Subscription(consumer)
        subscription.task = asyncio.create_task(
            consumer.run(subscription.stop), name=f"consume-{name}"
        )
        self._owned[name] = subscription
        metrics.PARTITION_OWNED.labels(name).set(1)

    def _let_go(self, name: str) -> None:
        subscription = self._owned.pop(name)
        subscription.stop.set()
        metrics.PARTITION_OWNED.labels(name).set(0)
        if subscription.task is not None and not subscription.task.done():
            self._letting_go.add(subscription.task)
            subscription.task.add_done_callback(self._letting_go.discard)

    def _restart_failed(self) -> None:
        """A consumer that died of a bug is started again, not left silent."""
        for name, subscription in list(self._owned.items()):
            task = subscription.task
            if task is None or not task.done() or subscription.stop.is_set():
                continue
            if not task.cancelled() and task.exception() is not None:
                log.error("partition_consumer_failed", queue=name, error=repr(task.exception()))
            self._owned.pop(name)
            self._take(name)
