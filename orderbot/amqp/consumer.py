"""A queue consumer with bounded concurrency, one settling policy and a graceful stop.

A handler returns when it is done with a message, and the consumer acknowledges it.
A handler that fails for a transient reason (a dependency is down: errors.is_transient)
is run again in place with backoff until it succeeds: nacking it would count a
delivery, and enough of those would park a healthy message in the DLQ. Asked to stop
meanwhile, the consumer leaves the message unacknowledged for redelivery. Any other
failure is a bug or poison: the message is returned to its queue, which counts a
delivery, and the queue's delivery limit parks it in the DLQ in the end.

Concurrency is bounded by the channel's prefetch: the broker never hands this
process more unacknowledged messages than that. On stop the consumer is cancelled
first (no new work), the in-flight handlers get `shutdown_timeout` to finish, and
whatever is still running is cancelled; its messages are unacknowledged and the
broker redelivers them.

Each handler runs in a task of this consumer's own, not in the task aiormq created
for the delivery: aiormq cancels a channel's tasks when the connection closes (a
broker restart, `rabbitmqctl close_connection`, a network cut), and a step cut
between sending its reply and committing its state would send the reply again when
the broker redelivers the message. Instead the step finishes; its ack on the dead
channel is skipped (the broker has already requeued the message), and the
redelivery finds the step's processed-marker and is only acknowledged. Until the
old handlers finish, a process can hold up to twice its prefetch after a reconnect.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import aiormq
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from orderbot.amqp.link import BrokerLink
from orderbot.errors import is_transient
from orderbot.runtime import metrics
from orderbot.runtime.waiting import sleep_unless_set, until_done

log = structlog.get_logger(__name__)


class _Channel(Protocol):
    @property
    def is_closed(self) -> bool: ...


class Delivery(Protocol):
    """What a handler reads of a delivered message, and how it settles it: aio-pika's
    incoming message, or amqp/testing.py's in-memory one."""

    @property
    def body(self) -> bytes: ...
    @property
    def headers(self) -> Mapping[str, Any]: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def correlation_id(self) -> str | None: ...
    @property
    def channel(self) -> _Channel: ...

    async def ack(self, multiple: bool = False) -> None: ...
    async def nack(self, multiple: bool = False, requeue: bool = True) -> None: ...


Handler = Callable[[Delivery], Awaitable[None]]

SETTLE_TIMEOUT = 5.0  # an ack is one frame; longer means the connection is dead


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
        self._inflight: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then drain."""
        self._stop = stop
        if not await self._broker.wait_connected(stop):
            return
        subscribed = await self._subscribe(stop)
        if subscribed is None:
            return
        channel, queue, tag = subscribed
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

    async def _subscribe(
        self, stop: asyncio.Event
    ) -> tuple[AbstractChannel, AbstractQueue, str] | None:
        """Open a channel and start consuming, retried until it works or `stop` is set.

        The broker can refuse a consume for a while (a queue not declared yet, a quorum
        queue still electing its leader, an INTERNAL_ERROR that closes the connection):
        that is an outage to wait out, not a reason for the process to die.
        """
        delay = 0.2
        while not stop.is_set():
            channel: AbstractChannel | None = None
            try:
                channel = await self._broker.connection.channel()
                await channel.set_qos(prefetch_count=self._prefetch)
                # declare_queue (passive) registers the queue with the robust channel,
                # which then restores it and its consumer after a reconnect; get_queue
                # does not.
                queue = await channel.declare_queue(self._queue, passive=True)
                tag = await queue.consume(self._on_message)
            except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
                log.warning("consume_failed", queue=self._queue, error=repr(exc), retry_in=delay)
                if channel is not None:
                    await _bounded(channel.close(), "channel_close_failed")
                await sleep_unless_set(delay, stop)
                delay = min(delay * 2, 5.0)
                continue
            return channel, queue, tag
        return None

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
        """Called in a task the channel owns: hand the message to a task of our own."""
        task = asyncio.create_task(self._handle(message), name=f"handle-{self._queue}")
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        inflight = metrics.CONSUMER_INFLIGHT.labels(self._queue)
        inflight.inc()
        try:
            try:
                await self._handler(message)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                # A dependency is down: the same handler again, in place, with backoff.
                log.warning("dependency_unavailable", error=repr(exc), queue=self._queue)
                await until_done(functools.partial(self._handler, message), self._stop)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handler_failed", queue=self._queue, message_id=message.message_id)
            metrics.MESSAGES_FAILED.labels(self._queue).inc()
            await _settle(message, requeue=True)
        else:
            await _settle(message)
        finally:
            inflight.dec()


async def _bounded(operation: Awaitable[object], failure: str) -> None:
    try:
        async with asyncio.timeout(5):
            await operation
    except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError, TimeoutError) as exc:
        log.warning(failure, error=repr(exc))


async def _settle(message: Delivery, *, requeue: bool | None = None) -> None:
    """Ack (or nack when `requeue` is given); if the channel the message came on is
    gone, the broker has requeued it already and redelivers it.

    An ack written to a closed aiormq channel would wait for ever on a connection
    nobody writes to any more, so a closed channel is skipped and the rest bounded.
    """
    try:
        closed = message.channel.is_closed
    except aiormq.exceptions.ChannelInvalidStateError:  # aio-pika's answer for a closed one
        closed = True
    if closed:
        log.info("settle_skipped_channel_closed", message_id=message.message_id)
        return
    settlement = message.ack() if requeue is None else message.nack(requeue=requeue)
    try:
        async with asyncio.timeout(SETTLE_TIMEOUT):
            await settlement
    except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError, TimeoutError) as exc:
        log.warning("settle_failed", error=repr(exc), message_id=message.message_id)
