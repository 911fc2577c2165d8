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

A channel the broker takes back (the connection closed) is not restored by aio-pika:
the consumer sees it closed and subscribes again on the next connection, so what it
consumes is only ever what it subscribed to itself.

Each handler runs in a task of this consumer's own, not in the task aiormq created
for the delivery: aiormq cancels a channel's tasks when the connection closes (a
broker restart, `rabbitmqctl close_connection`, a network cut), and a step cut
between sending its reply and committing its state would send the reply again when
the broker redelivers the message. Instead the step finishes; its ack on the dead
channel is skipped (the broker has already requeued the message), and the
redelivery finds the step's processed-marker and is only acknowledged. Until the
old handlers finish, a process can hold up to twice its prefetch after a reconnect.

Acknowledgements are sent together (`_Acks`): a handled message's ack waits for the
process's next ack moment (every ACK_WINDOW, the same for all its channels, `_AckClock`),
or until half the prefetch is waiting, and then every delivery tag of the channel up to
the highest one below which all are settled goes in one ack with `multiple`. The
broker takes the acks of a moment in one burst, and a quorum queue settles a multiple
ack in one log entry instead of one each. A
tag left unacknowledged (handed back, stopping, a handler cancelled) is never covered:
the multiple ack stops below it, and the handled messages above it are acknowledged
one by one. What waits is sent before the channel is let go; a process killed
meanwhile leaves those messages to be delivered again, and their steps, already
applied, are only acknowledged then. A message whose outcome leaves nothing by which a
redelivery would be known (it was parked: `ack_at_once`) is acknowledged without waiting,
so that a connection lost in the window does not park it a second time.

A single-active-consumer queue is let go differently (`hand_over`): a cancel would let
the broker activate the next consumer at once, while the handlers here still run the
messages it delivered, and a later message of the same customer could be applied there
first. So the consumer stays subscribed while it lets go: a handler that has not begun
its work asks `handed_back()` and leaves its message unacknowledged, the handlers that
had begun finish and are acknowledged, and then the channel is closed, which returns
the untouched messages to the head of the queue for the next consumer, ahead of
anything newer. Past `shutdown_timeout` the channel is closed all the same; a handler
still running then races the redelivery, and of two runs of one message the second
finds it applied.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import aio_pika
import aiormq
import structlog
from aio_pika.abc import AbstractChannel, AbstractQueue
from aiormq.abc import DeliveredMessage

from orderbot.amqp.link import BrokerLink
from orderbot.errors import Stopping, is_transient
from orderbot.runtime import metrics
from orderbot.runtime.waiting import sleep_unless_set, until_done, until_set_or_stopped

log = structlog.get_logger(__name__)


class _Channel(Protocol):
    @property
    def is_closed(self) -> bool: ...


class Delivery(Protocol):
    """What a handler reads of a delivered message, and how it settles it: `Delivered`
    below, or amqp/testing.py's in-memory one."""

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


class Delivered:
    """A delivery as aiormq hands it over, with what a handler reads of it.

    Not aio-pika's IncomingMessage: that decodes every property (timestamps, expiry,
    priority) of every message and runs the consumer's callback in a task of its own,
    for handlers that read the body, the headers and two ids. Settling it twice raises,
    as aio-pika's does: a tag acknowledged twice closes the channel.
    """

    __slots__ = (
        "body",
        "channel",
        "correlation_id",
        "delivery_tag",
        "headers",
        "message_id",
        "processed",
    )

    def __init__(self, delivered: DeliveredMessage) -> None:
        properties = delivered.header.properties
        self.body: bytes = delivered.body
        self.headers: Mapping[str, Any] = properties.headers or {}
        self.message_id: str | None = properties.message_id
        self.correlation_id: str | None = properties.correlation_id
        self.delivery_tag: int | None = delivered.delivery_tag
        self.channel: aiormq.abc.AbstractChannel = delivered.channel
        self.processed = False

    async def ack(self, multiple: bool = False) -> None:
        await self.channel.basic_ack(self._unsettled(), multiple=multiple)
        self.processed = True

    async def nack(self, multiple: bool = False, requeue: bool = True) -> None:
        await self.channel.basic_nack(self._unsettled(), multiple=multiple, requeue=requeue)
        self.processed = True

    def _unsettled(self) -> int:
        if self.processed:
            raise RuntimeError(f"message {self.message_id} is settled already")
        if self.delivery_tag is None:  # only a consume with no_ack has none; none is made
            raise RuntimeError("a delivery without a delivery tag")
        return self.delivery_tag


SETTLE_TIMEOUT = 5.0  # an ack is one frame; longer means the connection is dead
SUBSCRIBE_TIMEOUT = 10.0  # a channel, its qos, a passive declare and a consume
CHANNEL_CHECK = 1.0  # seconds between two looks at a consuming channel
ACK_WINDOW = 0.1  # seconds a handled message's ack may wait for others to go with it

# Set in each handler's task: the event of its consumer letting its queue go.
_LETTING_GO: contextvars.ContextVar[asyncio.Event | None] = contextvars.ContextVar(
    "letting_go", default=None
)


# Set in each handler's task: whether its message's ack must go without waiting.
_AT_ONCE: contextvars.ContextVar[_Prompt | None] = contextvars.ContextVar("at_once", default=None)


class _Prompt:
    """Mutable, so that a task the handler starts shares its answer."""

    __slots__ = ("asked",)

    def __init__(self) -> None:
        self.asked = False


def ack_at_once() -> None:
    """The message being handled is not to wait for the others' ack moment: its outcome
    (parked, not applied) leaves no marker, and a redelivery would do it again. Heard
    from the handler's task or a task it awaits (one it leaves running may outlive the
    ack); outside a handler of this module's consumer, nothing."""
    prompt = _AT_ONCE.get()
    if prompt is not None:
        prompt.asked = True


def handed_back(message: Delivery) -> bool:
    """Must the handler leave `message` alone? Its channel is gone, or its consumer is
    letting the queue go: the broker delivers it again, to whoever consumes next."""
    letting_go = _LETTING_GO.get()
    return channel_gone(message) or (letting_go is not None and letting_go.is_set())


class Consumer:
    def __init__(
        self,
        broker: BrokerLink,
        queue: str,
        handler: Handler,
        *,
        prefetch: int,
        shutdown_timeout: float,
        hand_over: bool = False,
    ) -> None:
        self._broker = broker
        self._hand_over = hand_over
        self._queue = queue
        self._handler = handler
        self._prefetch = prefetch
        self._shutdown_timeout = shutdown_timeout
        self._inflight: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._letting_go = asyncio.Event()
        self._acks: _Acks | None = None
        self._drained = False  # the consumer is letting go: no handler starts any more
        self._inflight_gauge = metrics.CONSUMER_INFLIGHT.labels(queue)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then drain."""
        self._stop = stop
        self._drained = False
        if not await self._broker.wait_connected(stop):
            return
        prefetch = metrics.CONSUMER_PREFETCH.labels(self._queue)
        subscribed: tuple[AbstractChannel, AbstractQueue, str] | None = None
        try:
            while not stop.is_set():
                subscribed = await self._subscribe(stop)
                if subscribed is None:
                    return
                prefetch.set(self._prefetch)
                log.info("consuming", queue=self._queue, prefetch=self._prefetch)
                if await _until_stopped_or_closed(stop, subscribed[0]):
                    break
                # The broker took the channel back (the connection closed): its
                # unacknowledged messages are requeued already, and the handlers still
                # running skip their acks. Consume again on the connection that comes next.
                prefetch.set(0)
                log.warning("consumer_channel_lost", queue=self._queue)
        finally:
            prefetch.set(0)
            if subscribed is not None:
                await self._let_go(*subscribed)
        log.info("consumer_stopped", queue=self._queue)

    async def _let_go(self, channel: AbstractChannel, queue: AbstractQueue, tag: str) -> None:
        # During a broker outage these would wait for the reconnect; the broker
        # requeues whatever is unacknowledged anyway, so they are bounded.
        if self._hand_over:
            self._letting_go.set()
        elif not channel.is_closed:
            await _bounded(queue.cancel(tag), "consumer_cancel_failed")
        await self._drain()
        if self._acks is not None:
            await self._acks.flush()  # what was handled is not delivered again
        await _bounded(channel.close(), "channel_close_failed")

    async def _subscribe(
        self, stop: asyncio.Event
    ) -> tuple[AbstractChannel, AbstractQueue, str] | None:
        """Open a channel and start consuming, retried until it works or `stop` is set.

        The broker can refuse a consume for a while (a queue not declared yet, a quorum
        queue still electing its leader, an INTERNAL_ERROR that closes the connection),
        and the connection can be down, being restored: an outage to wait out, not a
        reason for the process to die.

        The channel is a plain one, never restored by aio-pika's robust connection:
        this consumer subscribes again itself when it is lost. A robust channel is
        restored at every reconnect even after it was closed, with every consumer it
        ever had that was not cancelled; a partition handed over (closed, not
        cancelled) would come back on the old owner, whose handlers leave every
        message alone, and as the partition's active consumer it would hold the
        partition for ever while the new owner waits in line.
        """
        delay = 0.2
        while not stop.is_set():
            if not await until_set_or_stopped(self._broker.connection.connected, stop):
                return None
            channel: AbstractChannel | None = None
            try:
                async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                    channel = aio_pika.Channel(self._broker.connection, publisher_confirms=False)
                    await channel.initialize()
                    await channel.set_qos(prefetch_count=self._prefetch)
                    queue = await channel.declare_queue(self._queue, passive=True)
                    underlay = await channel.get_underlay_channel()
                    self._acks = _Acks(underlay, self._prefetch)
                    consuming = await underlay.basic_consume(self._queue, self._on_delivered)
                    if consuming.consumer_tag is None:  # pamqp's type allows it; never sent
                        raise RuntimeError("the broker gave no consumer tag")
                    tag = consuming.consumer_tag
            except (
                aiormq.exceptions.AMQPError,
                ConnectionError,
                RuntimeError,
                TimeoutError,
            ) as exc:
                log.warning("consume_failed", queue=self._queue, error=repr(exc), retry_in=delay)
                if channel is not None and channel.is_initialized:
                    await _bounded(channel.close(), "channel_close_failed")
                await sleep_unless_set(delay, stop)
                delay = min(delay * 2, 5.0)
                continue
            return channel, queue, tag
        return None

    async def _drain(self) -> None:
        """Wait for every handler, also those of deliveries that came while this waited
        (a delivery on its way when the consume was cancelled, or any while a queue is
        handed over): one that finished after the acks were flushed would find its
        channel closed and be delivered again. The prefetch bounds how many can come."""
        if self._inflight:
            log.info("draining", inflight=len(self._inflight))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._shutdown_timeout
        while self._inflight and (left := deadline - loop.time()) > 0:
            await asyncio.wait(set(self._inflight), timeout=left)
        # From here on a delivery still on its way through aiormq's task is left alone:
        # the acks are about to be flushed and the channel closed, which requeues it.
        self._drained = True
        pending = set(self._inflight)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("drain_timeout_cancelled", tasks=len(pending))
            await asyncio.gather(*pending, return_exceptions=True)

    async def _on_delivered(self, delivered: DeliveredMessage) -> None:
        await self._on_message(Delivered(delivered))

    async def _on_message(self, message: Delivered) -> None:
        """Called in a task the channel owns: hand the message to a task of our own."""
        if self._drained:
            log.info("left_for_redelivery", queue=self._queue, message_id=message.message_id)
            return
        acks = self._acks
        if acks is not None and (channel_gone(message) or message.channel is not acks.channel):
            acks = None  # a late delivery of a channel consumed before: its tags are its own
        task = asyncio.create_task(self._handle(message, acks), name=f"handle-{self._queue}")
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _handle(self, message: Delivered, acks: _Acks | None) -> None:
        _LETTING_GO.set(self._letting_go)
        prompt = _Prompt()
        _AT_ONCE.set(prompt)
        inflight = self._inflight_gauge
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
        except Stopping:
            # Asked to stop while a dependency is down, or handed back: left unacknowledged.
            log.info("left_for_redelivery", queue=self._queue, message_id=message.message_id)
        except Exception:
            log.exception("handler_failed", queue=self._queue, message_id=message.message_id)
            metrics.MESSAGES_FAILED.labels(self._queue).inc()
            if await _settle(message, requeue=True) and acks is not None:
                acks.settled(message)
        else:
            if acks is None:
                await _settle(message)
            else:
                acks.handled(message, at_once=prompt.asked)
        finally:
            inflight.dec()


async def _until_stopped_or_closed(stop: asyncio.Event, channel: AbstractChannel) -> bool:
    """Wait until `stop` is set (True) or `channel` is closed (False). The closed state
    is also looked at every CHANNEL_CHECK seconds: a channel whose close callback never
    ran (aiormq cancelled its reader in a teardown) must not be waited on for ever."""
    # The channel's own future (ensure_future returns it as it is): never cancelled here.
    closed = asyncio.ensure_future(channel.closed())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while not (stop.is_set() or channel.is_closed):
            await asyncio.wait(
                {stopping, closed}, timeout=CHANNEL_CHECK, return_when=asyncio.FIRST_COMPLETED
            )
        return stop.is_set()
    finally:
        stopping.cancel()


async def _bounded(operation: Awaitable[object], failure: str) -> None:
    try:
        async with asyncio.timeout(5):
            await operation
    except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError, TimeoutError) as exc:
        log.warning(failure, error=repr(exc))


def channel_gone(message: Delivery) -> bool:
    """The channel `message` came on is closed: the broker has taken it back."""
    try:
        return message.channel.is_closed
    except aiormq.exceptions.ChannelInvalidStateError:  # aio-pika's messages answer so
        return True


async def _settle(
    message: Delivery, *, requeue: bool | None = None, multiple: bool = False
) -> bool:
    """Ack (or nack when `requeue` is given); if the channel the message came on is
    gone, the broker has requeued it already and redelivers it. True once sent.

    An ack written to a closed aiormq channel would wait for ever on a connection
    nobody writes to any more, so a closed channel is skipped and the rest bounded.
    """
    if channel_gone(message):
        log.info("settle_skipped_channel_closed", message_id=message.message_id)
        return False
    settlement = (
        message.ack(multiple=multiple) if requeue is None else message.nack(requeue=requeue)
    )
    try:
        async with asyncio.timeout(SETTLE_TIMEOUT):
            await settlement
    except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError, TimeoutError) as exc:
        log.warning("settle_failed", error=repr(exc), message_id=message.message_id)
        return False
    return True


class _Acks:
    """The acks of one consuming channel, sent together.

    Delivery tags are numbered 1, 2, … per channel. `floor` is the highest tag such
    that every tag up to it was handled (its ack sent or waiting here) or nacked; a
    tag in flight or left unacknowledged stops it. An ack with `multiple` on a tag at
    or below the floor therefore covers only messages that were handled; one above
    it would cover a message still running or left for the next consumer, so those
    are acknowledged one by one. Sends take turns (a lock): a multiple ack written
    while an earlier send still had single acks to write could cover one of them,
    and a tag acknowledged twice closes the channel.
    """

    def __init__(self, channel: object, prefetch: int) -> None:
        self.channel = channel  # the aiormq channel whose tags these are
        self._eager = max(1, prefetch // 2)  # this many waiting: sent at once
        self._floor = 0
        self._above: set[int] = set()  # settled tags above the floor
        self._waiting: dict[int, Delivered] = {}
        self._soon = False  # a send is asked for on the next loop turn
        self._turn = asyncio.Lock()
        self._sends: set[asyncio.Task[None]] = set()

    def handled(self, message: Delivered, *, at_once: bool = False) -> None:
        """`message` is done with: acknowledge it soon, or on the next loop turn if
        `at_once` (unless its handler settled it itself: another ack of its tag would be
        refused, and a multiple one on it would leave the earlier ones unacknowledged)."""
        if not message.processed:
            self._waiting[_tag(message)] = message
        self.settled(message)
        if len(self._waiting) < self._eager and not at_once:
            _clock().due(self)
        elif not self._soon:
            self._soon = True
            asyncio.get_running_loop().call_soon(self.send_now)

    def settled(self, message: Delivered) -> None:
        """`message` is acknowledged or nacked (or waits here to be): the floor may pass
        its tag."""
        tag = _tag(message)
        if tag <= self._floor:
            return
        self._above.add(tag)
        while self._floor + 1 in self._above:
            self._floor += 1
            self._above.discard(self._floor)

    async def flush(self) -> None:
        """Send every ack waiting, and wait for it."""
        _clock().cancel(self)
        await self._send()
        if self._sends:
            await asyncio.gather(*self._sends, return_exceptions=True)

    def send_now(self) -> None:
        self._soon = False
        if not self._waiting:
            return
        task = asyncio.create_task(self._send(), name="acks")
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send(self) -> None:
        """An ack that could not be sent means the channel is gone or its connection
        dead, and the broker delivers the rest again: they are not tried one after the
        other, each up to SETTLE_TIMEOUT, while a stop or a hand-over waits."""
        async with self._turn:
            waiting, self._waiting = self._waiting, {}
            covered = [tag for tag in waiting if tag <= self._floor]
            if covered and not await _settle(waiting[max(covered)], multiple=len(covered) > 1):
                return
            for tag in sorted(waiting.keys() - set(covered)):
                if not await _settle(waiting[tag]):
                    return


class _AckClock:
    """One moment, every ACK_WINDOW, at which the acks waiting on every channel of the
    event loop are sent: the broker then takes them in one burst (its reader, the
    channels, each queue's log) rather than one wake-up per channel."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due: set[_Acks] = set()
        self._timer: asyncio.TimerHandle | None = None

    def due(self, acks: _Acks) -> None:
        self._due.add(acks)
        if self._timer is None:
            self._timer = self._loop.call_later(ACK_WINDOW, self._tick)

    def cancel(self, acks: _Acks) -> None:
        self._due.discard(acks)

    def _tick(self) -> None:
        self._timer = None
        due, self._due = self._due, set()
        for acks in due:
            acks.send_now()


_CLOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _AckClock] = (
    weakref.WeakKeyDictionary()
)


def _clock() -> _AckClock:
    loop = asyncio.get_running_loop()
    clock = _CLOCKS.get(loop)
    if clock is None:
        clock = _CLOCKS[loop] = _AckClock(loop)
    return clock


def _tag(message: Delivered) -> int:
    tag = message.delivery_tag
    if tag is None:  # only consumes with no_ack have none, and none are made here
        raise RuntimeError("a delivery without a delivery tag")
    return tag
