"""A queue consumer with bounded concurrency and a graceful stop.

Concurrency is bounded by the channel's prefetch: the broker never hands this
process more unacknowledged messages than that, and aio-pika runs each delivery
as its own task. On stop the consumer is cancelled first (no new work), the
in-flight tasks get `shutdown_timeout` to finish, and whatever is still running
is cancelled; its messages are unacknowledged and the broker redelivers them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiormq
import structlog
from aio_pika.abc import AbstractIncomingMessage

from orderbot import metrics
from orderbot.broker import BrokerLink

log = structlog.get_logger(__name__)

Handler = Callable[[AbstractIncomingMessage], Awaitable[None]]


class Consumer:
    def __init__(
        self,
        broker: BrokerLink,
        queue: str,
        handler: Handler,
        *,
        prefetch: int,
        shutdown_timeout: float,
    ) -> None:
        self._broker = broker
        self._queue = queue
        self._handler = handler
        self._prefetch = prefetch
        self._shutdown_timeout = shutdown_timeout
        self._inflight: set[asyncio.Task[object]] = set()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then drain."""
        if not await self._broker.wait_connected(stop):
            return
        channel = await self._broker.connection.channel()
        await channel.set_qos(prefetch_count=self._prefetch)
        # declare_queue (passive) registers the queue with the robust channel, which
        # then restores it and its consumer after a reconnect; get_queue does not.
        queue = await channel.declare_queue(self._queue, passive=True)
        tag = await queue.consume(self._on_message)
        metrics.CONSUMER_PREFETCH.labels(self._queue).set(self._prefetch)
        log.info("consuming", queue=self._queue, prefetch=self._prefetch)
        try:
            await stop.wait()
        finally:
            # During a broker outage these would wait for the reconnect; the broker
            # requeues whatever is unacknowledged anyway, so they are bounded.
            await _bounded(queue.cancel(tag), "consumer_cancel_failed")
            await self._drain()
            await _bounded(channel.close(), "channel_close_failed")
        log.info("consumer_stopped", queue=self._queue)

    async def _drain(self) -> None:
        if not self._inflight:
            return
        log.info("draining", inflight=len(self._inflight))
        _, pending = await asyncio.wait(set(self._inflight), timeout=self._shutdown_timeout)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("drain_timeout_cancelled", tasks=len(pending))
            await asyncio.gather(*pending, return_exceptions=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        inflight = metrics.CONSUMER_INFLIGHT.labels(self._queue)
        inflight.inc()
        try:
            await self._handler(message)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handler_failed", queue=self._queue, message_id=message.message_id)
            metrics.MESSAGES_FAILED.labels(self._queue).inc()
            await _settle(message.nack(requeue=True))
        finally:
            inflight.dec()
            self._inflight.discard(task)


async def _bounded(operation: Awaitable[object], failure: str) -> None:
    try:
        async with asyncio.timeout(5):
            await operation
    except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError, TimeoutError) as exc:
        log.warning(failure, error=repr(exc))


async def _settle(settlement: Awaitable[None]) -> None:
    """Ack or nack; if the channel is gone the broker redelivers anyway."""
    try:
        await settlement
    except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
        log.warning("settle_failed", error=str(exc))


async def ack(message: AbstractIncomingMessage) -> None:
    await _settle(message.ack())
