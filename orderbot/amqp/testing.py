"""An in-memory broker for tests of what a component publishes, in milliseconds.

`InMemoryBroker` is a `Publisher`: it records every confirmed publish per queue, in
order, and can be told to refuse (as a broker that is down would). `deliver` hands a
recorded message to a handler as the consumer would, and says how it was settled. It
checks the order of a step's effects and the choice of delay tier; what only a real
broker can show (confirms under load, redelivery after a crash) stays with the suites
that run against RabbitMQ.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from orderbot.amqp.topology import Topology
from orderbot.errors import BrokerUnavailable


@dataclass(frozen=True, slots=True)
class Published:
    queue: str
    body: bytes
    message_id: str
    headers: Mapping[str, object]
    correlation_id: str | None


@dataclass
class _Closed:
    is_closed: bool = False


@dataclass
class InMemoryDelivery:
    """A delivered message as a handler sees it (`amqp.consumer.Delivery`)."""

    body: bytes
    headers: Mapping[str, Any]
    message_id: str | None
    correlation_id: str | None
    channel: _Closed = field(default_factory=_Closed)
    settled: str | None = None  # "ack", "nack" or "requeue" once settled

    async def ack(self, multiple: bool = False) -> None:
        self.settled = "ack"

    async def nack(self, multiple: bool = False, requeue: bool = True) -> None:
        self.settled = "requeue" if requeue else "nack"


class InMemoryBroker:
    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.published: list[Published] = []
        self.refusing = False  # True: every publish raises BrokerUnavailable

    async def publish(
        self,
        queue: str,
        body: bytes,
        *,
        message_id: str,
        headers: Mapping[str, object] | None = None,
        correlation_id: str | None = None,
    ) -> None:
        if self.refusing:
            raise BrokerUnavailable(f"publish to {queue} refused (in-memory broker)")
        self.published.append(
            Published(queue, body, message_id, dict(headers or {}), correlation_id)
        )

    def on(self, queue: str) -> list[Published]:
        """What was published to `queue`, oldest first."""
        return [p for p in self.published if p.queue == queue]

    async def deliver(
        self, published: Published, handler: Callable[[InMemoryDelivery], Awaitable[None]]
    ) -> InMemoryDelivery:
        """Hand `published` to `handler` as the consumer would: acknowledged when the
        handler returns; a handler's error is raised here (a real consumer would run a
        transient failure again, and return anything else to the queue)."""
        delivery = InMemoryDelivery(
            body=published.body,
            headers=dict(published.headers),
            message_id=published.message_id,
            correlation_id=published.correlation_id,
        )
        await handler(delivery)
        delivery.settled = delivery.settled or "ack"
        return delivery
