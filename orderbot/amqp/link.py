"""The AMQP connection of a process and its confirmed publishes.

A process must come up while the broker is down (the server then answers 503; a
worker waits), so the first connection is retried in the background instead of
failing start-up. After the first success aio-pika's robust connection restores
channels, queues and consumers by itself, on the next node of AMQP_URL when there are
several (amqp/nodes.py); a first attempt that fails moves to the next node too.
`BrokerLink` is the `Publisher` every component publishes through (amqp/publisher.py;
amqp/testing.py has the in-memory one).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime

import aio_pika
import aiormq
import structlog
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from yarl import URL

from orderbot.amqp.nodes import ClusterConnection, node_label, start_index
from orderbot.amqp.topology import Topology, declare_topology
from orderbot.config.settings import Settings
from orderbot.errors import BrokerUnavailable
from orderbot.runtime.waiting import until_set_or_stopped

log = structlog.get_logger(__name__)

_PERSISTENT = int(aio_pika.DeliveryMode.PERSISTENT)

# The first connection, its channel and the topology must be done within this many
# PUBLISH_TIMEOUTs, or the attempt is abandoned and made again.
FIRST_CONNECT_TIMEOUTS = 3
RECONNECT_INTERVAL = 1  # seconds between reconnect attempts when there are several nodes


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

    async def __aenter__(self) -> BrokerLink:
        self._task = asyncio.create_task(self._connect_forever(), name="broker-connect")
        return self

    async def __aexit__(self, *_: object) -> None:
        # Both steps are bounded: aiormq can take long to unwind a connect cancelled
        # half-way, and a stopping process must not wait on it.
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=2)
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
            raise BrokerUnavailable("not connected to the broker")
        channel = self._channel
        # The properties aio_pika.Message would build, without building one: its
        # constructor (a guarded __setattr__ per field, enum and type coercions) costs
        # more than the rest of this method. Same frames on the wire.
        properties = aiormq.spec.Basic.Properties(
            content_type="application/json",
            correlation_id=correlation_id,
            delivery_mode=_PERSISTENT,
            headers=dict(headers) if headers else {},  # type: ignore[arg-type]
            message_id=message_id,
            priority=0,
            timestamp=datetime.now(UTC),
        )
        try:
            async with asyncio.timeout(self._timeout):
                # What aio-pika's Exchange.publish does for the default exchange.
                if channel.is_closed:
                    raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
                underlay = await channel.get_underlay_channel()
                await underlay.basic_publish(
                    body, exchange="", routing_key=queue, properties=properties, mandatory=True
                )
        except (aiormq.exceptions.AMQPError, TimeoutError, ConnectionError) as exc:
            raise BrokerUnavailable(f"publish to {queue} not confirmed: {exc!r}") from exc
        except Exception as exc:
            # A frame that failed to encode after aiormq counted its delivery tag
            # leaves every later confirm matched to the wrong publish: the channel
            # is unusable, so it is replaced.
            log.error("publish_failed_channel_reset", error=repr(exc))
            await self._replace_channel()
            raise BrokerUnavailable(f"publish to {queue} failed: {exc!r}") from exc

    async def _replace_channel(self) -> None:
        old, self._channel = self._channel, None
        await _close_quietly(old)
        if self._connection is not None and not self._connection.is_closed:
            self._channel = await self._connection.channel(  # type: ignore[assignment]
                publisher_confirms=True, on_return_raises=True
            )


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
