"""What publishing code needs of the broker: a confirmed publish and the queue names.

`BrokerLink` (amqp/link.py) is the real one; `InMemoryBroker` (amqp/testing.py) records
publishes per queue, so the order of a component's effects and its choice of queue can
be checked without a broker.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from orderbot.amqp.topology import Topology


class Publisher(Protocol):
    @property
    def topology(self) -> Topology: ...

    async def publish(
        self,
        queue: str,
        body: bytes,
        *,
        message_id: str,
        headers: Mapping[str, object] | None = None,
        correlation_id: str | None = None,
    ) -> None:
        """Return only once the broker confirmed the persistent message; raise
        BrokerUnavailable when it did not (the caller then keeps its input)."""
