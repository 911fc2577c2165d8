"""The AMQP connection of a process and its confirmed publishes.

A process must come up while the broker is down (the server then answers 503; a
worker waits), so the first connection is retried in the background instead of
failing start-up. After the first success aio-pika's robust connection reconnects, on
the next node of AMQP_URL when there are several (amqp/nodes.py; a first attempt that
fails moves to the next node too), and restores the publish channel by itself; consumers
open plain channels on it and subscribe again themselves (amqp/consumer.py says why).
`BrokerLink` is the `Publisher` every component publishes through (amqp/publisher.py;
amqp/testing.py has the in-memory one).

A nack is also a reason to renew the channel. RabbitMQ keeps, per channel and quorum
queue, whether the queue takes publishes; a channel that first publishes to a queue
while the leader its record names is on a node just stopped is told no, and told no for
every later publish to that queue, long after a new leader was elected (seen when a node
is stopped under load: one partition nacked for as long as the channel lived, and the
server's spool, drained oldest first, stuck behind it). A new channel asks the leader
anew. A queue that is really full (reject-publish at its max length) costs a renewal a
second at most.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import aiormq
import structlog
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq.abc import ConfirmationFrameType
from yarl import URL

from orderbot.amqp.frames import publish_frames
from orderbot.amqp.nodes import ClusterConnection, node_label, start_index
from orderbot.amqp.pipelined import PipelinedPublisher
from orderbot.amqp.topology import Topology, declare_topology
from orderbot.config.settings import Settings
from orderbot.errors import BrokerUnavailable
from orderbot.runtime.waiting import until_set_or_stopped

log = structlog.get_logger(__name__)

_NOT_CONFIRMED = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    TimeoutError,
    ConnectionError,
)

# The first connection, its channel and the topology must be done within this many
# PUBLISH_TIMEOUTs, or the attempt is abandoned and made again.
FIRST_CONNECT_TIMEOUTS = 3
RECONNECT_INTERVAL = 1  # seconds between reconnect attempts when there are several nodes
RENEW_AFTER_NACK_EVERY = 1.0  # seconds: at most one channel renewal for nacks in this time


class BrokerLink:
    """Owns one robust connection, a confirm-mode channel and the declared topology."""

    def __init__(self, settings: Settings, role: str) -> None:
        # The name goes in each node's URL (aiormq reads it there): connect_robust
        # dropped its client_properties once given a URL.
        self._nodes = tuple(
            _node_url(URL(node), role, several=len(settings.amqp_nodes) > 1)
            for node in settings.amqp_nodes
        )
        self._start = start_index(len(self._nodes))
        self._role = role
        self._timeout = settings.publish_timeout.total_seconds()
        self.topology = Topology.from_settings(settings)
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._fatal: Exception | None = None
        self._pipeline = PipelinedPublisher(self._timeout)
        self._reopening: asyncio.Task[None] | None = None
        self._renewing: asyncio.Task[None] | None = None
        self._renewed: aiormq.Channel | None = None  # the channel being renewed
        self._renewed_at = -RENEW_AFTER_NACK_EVERY

    async def __aenter__(self) -> BrokerLink:
        self._task = asyncio.create_task(self._connect_forever(), name="broker-connect")
        return self

    async def __aexit__(self, *_: object) -> None:
        # Both steps are bounded: aiormq can take long to unwind a connect cancelled
        # half-way, and a stopping process must not wait on it.
        for task in (self._task, self._reopening, self._renewing):
            if task is not None:
                task.cancel()
                await asyncio.wait({task}, timeout=2)
        await _close_quietly(self._connection)

    async def _connect_forever(self) -> None:
        delay = 0.2
        while True:
            connection: ClusterConnection | None = None
            node = node_label(self._nodes[self._start % len(self._nodes)])
            try:
                # Bounded as a whole: a first attempt that times out can leave aio-pika's
                # connect waiting forever (its reconnect loop never reports back), and a
                # process that never connects and never says so is worse than a retry.
                async with asyncio.timeout(FIRST_CONNECT_TIMEOUTS * self._timeout):
                    connection = ClusterConnection(self._nodes, self._start)
                    await connection.connect(timeout=self._timeout)
                    channel = await connection.channel(
                        publisher_confirms=True, on_return_raises=True
                    )
                    await declare_topology(channel, self.topology)
            except aiormq.exceptions.ChannelPreconditionFailed as exc:
                # An existing queue was declared with other arguments: retrying cannot help.
                log.error("broker_topology_mismatch", error=str(exc))
                self._fatal = exc
                self._connected.set()
                await _close_quietly(connection)
                return
            except asyncio.CancelledError:
                # The process stops mid-attempt. Without a close, aio-pika's reconnect
                # task swallows the cancel ("reconnecting after 5 s") and outlives the
                # role, so the process did not exit after "stopped".
                await _close_quietly(connection)
                raise
            except Exception as exc:
                self._start += 1  # the next node; a single one is tried again
                # The next nodes at once; after a full round that refused, a pause.
                pause = delay if self._start % len(self._nodes) == 0 else 0.0
                log.warning("broker_connect_failed", node=node, error=str(exc), retry_in=pause)
                await _close_quietly(connection)
                if pause:
                    await asyncio.sleep(pause)
                    delay = min(delay * 2, 5.0)
                continue
            connection.reconnect_callbacks.add(self._on_reconnect)
            self._connection = connection
            self._channel = channel  # type: ignore[assignment]
            self._connected.set()
            log.info("broker_connected", node=connection.node, nodes=len(self._nodes))
            return

    def _on_reconnect(self, connection: AbstractRobustConnection | None) -> None:
        """After a lost connection: channels, consumers and confirms are restored."""
        log.info("broker_reconnected", node=self.node, nodes=len(self._nodes))

    async def wait_connected(self, stop: asyncio.Event | None = None) -> bool:
        """Wait for the first connection; False if `stop` was set first."""
        if stop is None:
            await self._connected.wait()
        else:
            await until_set_or_stopped(self._connected, stop)
        if self._fatal is not None:
            raise self._fatal
        return self._connected.is_set()

    @property
    def connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise BrokerUnavailable("not connected to the broker yet")
        return self._connection

    @property
    def node(self) -> str | None:
        """host:port of the node the connection is on (or trying), once connected."""
        connection = self._connection
        return connection.node if isinstance(connection, ClusterConnection) else None

    @property
    def is_ready(self) -> bool:
        return (
            self._connection is not None
            and not self._connection.is_closed
            and self._channel is not None
            and not self._channel.is_closed
        )

    async def publish(
        self,
        queue: str,
        body: bytes,
        *,
        message_id: str,
        headers: Mapping[str, object] | None = None,
        correlation_id: str | None = None,
    ) -> None:
        """Publish persistently to `queue` and return only once the broker confirmed it.

        Raises BrokerUnavailable when the broker is unreachable, nacks (a full queue
        with reject-publish), returns the message as unroutable, or does not answer
        within PUBLISH_TIMEOUT.
        """
        if not self.is_ready or self._channel is None:
            self._reopen_lost_channel()
            raise BrokerUnavailable("not connected to the broker")
        channel, connection = self._channel, self._connection
        try:
            if connection is not None and connection.connected.is_set():
                # Connected: getting the channel does not wait, and the confirm has its
                # own deadline (amqp/pipelined.py), so no timeout per publish is needed.
                await self._publish(channel, queue, body, message_id, headers, correlation_id)
            else:
                # Bounded as a whole, as the confirm is: getting the channel waits for the
                # connection while aio-pika reconnects, and a publish must fail over to the
                # spool within PUBLISH_TIMEOUT, never wait for a reconnect that may not come.
                async with asyncio.timeout(self._timeout):
                    await self._publish(channel, queue, body, message_id, headers, correlation_id)
        except _NOT_CONFIRMED as exc:
            raise BrokerUnavailable(f"publish to {queue} not confirmed: {exc!r}") from exc
        except ValueError as exc:  # not encodable (a short string over 255 bytes)
            log.error("publish_not_encodable", error=repr(exc))
            raise BrokerUnavailable(f"publish to {queue} failed: {exc!r}") from exc

    async def _publish(
        self,
        channel: AbstractRobustChannel,
        queue: str,
        body: bytes,
        message_id: str,
        headers: Mapping[str, object] | None,
        correlation_id: str | None,
    ) -> None:
        # What aio-pika's Exchange.publish does for the default exchange, with the
        # frames encoded here (amqp/frames.py) and written with the other publishes of
        # this loop turn (amqp/pipelined.py).
        underlay = await channel.get_underlay_channel()
        if not isinstance(underlay, aiormq.Channel):  # the frames are aiormq's
            raise aiormq.exceptions.ChannelInvalidStateError(f"{underlay!r} not aiormq's")
        if underlay is self._renewed:
            raise aiormq.exceptions.ChannelInvalidStateError("renewed after a nack")
        frames = publish_frames(
            underlay.number,
            queue,
            body,
            message_id=message_id,
            correlation_id=correlation_id,
            headers=headers,
            timestamp=int(time.time()),
            max_content_size=underlay.max_content_size,
        )
        try:
            await _settled(self._pipeline.publish(underlay, frames, message_id))
        except _NOT_CONFIRMED as exc:
            if _is_nack(exc):
                self._renew_nacking_channel(underlay)
            raise

    def _reopen_lost_channel(self) -> None:
        """Reopen the channel if it died while its connection lives on.

        aio-pika restores a channel itself when the connection comes back, or when the
        broker closes the channel; but a channel whose reader was cancelled (aiormq does
        that to every task of a connection it tears down) counts as waiting for the
        connection's restore, and when that connection is not the one that closed, or
        the restore already ran, no one reopens it: the link would refuse every publish
        for good while the connection stays up. One reopen at a time, bounded.
        """
        connection, channel = self._connection, self._channel
        if (
            connection is None
            or channel is None
            or connection.is_closed
            or not connection.connected.is_set()
            or connection.reconnecting
            or not channel.is_closed
            or (self._reopening is not None and not self._reopening.done())
        ):
            return
        self._reopening = asyncio.create_task(self._reopen(channel), name="broker-reopen")

    def _renew_nacking_channel(self, underlay: aiormq.Channel) -> None:
        """Close the aiormq channel that was nacked; aio-pika's robust channel opens a new
        one on the same connection by itself, as when the broker closes a channel (module
        docstring: why). Nothing more is written to it meanwhile, and what was written
        gets its confirms first (bounded), so no publish fails for the renewal alone.
        One renewal at a time, at most one per RENEW_AFTER_NACK_EVERY."""
        now = time.monotonic()
        if (
            underlay.is_closed
            or now - self._renewed_at < RENEW_AFTER_NACK_EVERY
            or (self._renewing is not None and not self._renewing.done())
        ):
            return
        self._renewed_at = now
        self._renewed = underlay
        self._renewing = asyncio.create_task(self._renew(underlay), name="broker-renew")

    async def _renew(self, underlay: aiormq.Channel) -> None:
        log.warning("broker_channel_renewed_after_nack", node=self.node)
        pending = [c for c in underlay.confirmations.values() if isinstance(c, asyncio.Future)]
        try:
            if pending:
                await asyncio.wait(pending, timeout=self._timeout)
            async with asyncio.timeout(self._timeout):
                await underlay.close()
        except Exception as exc:  # the connection is going anyway; its restore reopens
            log.warning("broker_channel_renew_failed", error=repr(exc))
        finally:
            self._renewed = None

    async def _reopen(self, channel: AbstractRobustChannel) -> None:
        try:
            async with asyncio.timeout(FIRST_CONNECT_TIMEOUTS * self._timeout):
                await channel.restore()
        except Exception as exc:  # the next publish tries again
            log.warning("broker_channel_reopen_failed", error=repr(exc))
        else:
            log.info("broker_channel_reopened")


def _is_nack(exc: BaseException) -> bool:
    """The broker refused the publish (Basic.Nack), rather than returning it or not
    answering."""
    return (
        isinstance(exc, aiormq.exceptions.DeliveryError)
        and not isinstance(exc, aiormq.exceptions.PublishError)
        and isinstance(exc.frame, aiormq.spec.Basic.Nack)
    )


async def _settled(confirm: asyncio.Future[ConfirmationFrameType]) -> ConfirmationFrameType:
    """The confirm, with a cancellation that is the channel's, not this task's, made an
    outage: aiormq rejects the futures of a channel whose reader it cancelled with
    CancelledError, which, awaited, would cancel the request or the spool's drain task
    (and a cancelled drain never drains again) instead of failing this one publish."""
    try:
        return await confirm
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # this task was cancelled: stopping, or the timeout above
        raise ConnectionError("AMQP channel closed before the confirm") from None


def _node_url(url: URL, role: str, *, several: bool) -> URL:
    """A node's URL with the connection's name; with several nodes, a reconnect tries
    the next one after 1 s rather than aio-pika's 5 (`reconnect_interval` on the URL
    wins): another node is likely up."""
    query: dict[str, str] = {"name": f"orderbot-{role}"}
    if several and "reconnect_interval" not in url.query:
        query["reconnect_interval"] = str(RECONNECT_INTERVAL)
    return url.update_query(query)


async def _close_quietly(closable: AbstractRobustConnection | AbstractRobustChannel | None) -> None:
    if closable is None:
        return
    try:
        async with asyncio.timeout(5):
            await closable.close()
    except Exception as exc:
        log.debug("close_failed", error=repr(exc))
