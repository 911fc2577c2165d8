"""Queue depths read from the broker, for the `orderbot_queue_messages` gauge.

Each worker process polls with a passive declare (cheap, no management plugin
needed), so /metrics shows the backlog even where the management API is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog

from orderbot.amqp.link import BrokerLink
from orderbot.runtime import metrics

log = structlog.get_logger(__name__)


async def _poll(broker: BrokerLink, interval: float) -> None:
    await broker.wait_connected()
    channel = await broker.connection.channel()
    topology = broker.topology
    names = {
        "outbox": topology.outbox,
        "dlq": topology.dlq,
        "held": topology.held,
    }

    async def depth(name: str) -> int | None:
        try:
            declared = await channel.declare_queue(name, passive=True)
        except Exception as exc:  # a closed channel is reopened by the robust link
            log.debug("queue_depth_unavailable", queue=name, error=repr(exc))
            return None
        return declared.declaration_result.message_count or 0

    try:
        while True:
            # `messages` is the partitions' sum, so alerts need not know the count.
            total: int | None = None
            for name in topology.partitions:
                ready = await depth(name)
                if ready is not None:
                    metrics.PARTITION_MESSAGES.labels(name).set(ready)
                    total = (total or 0) + ready
            if total is not None:
                metrics.QUEUE_DEPTH.labels("messages").set(total)
            for label, name in names.items():
                ready = await depth(name)
                if ready is not None:
                    metrics.QUEUE_DEPTH.labels(label).set(ready)
            await asyncio.sleep(interval)
    finally:
        with contextlib.suppress(Exception):
            await channel.close()


@contextlib.asynccontextmanager
async def watch_queue_depths(broker: BrokerLink, interval: float = 5.0) -> AsyncIterator[None]:
    task = asyncio.create_task(_poll(broker, interval), name="queue-depths")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
