"""The broker's nodes, and a robust connection that moves among them.

aio-pika's robust connection reconnects to the one URL it was given, so a process on a
node that went away would knock on it for as long as it stays down. This connection
holds every node's URL and makes each connection attempt to the next one, the first
one a lost connection makes included: the node that just closed it (stopped, crashed,
partitioned away) is the one least likely to answer. On the node it reaches,
aio-pika's restore then reopens the channels, their QoS, queues and consumers, and the
publisher channel in confirm mode, as after any reconnect.

Each process starts at a node of its own (`start_index`): the connections of a
deployment spread over the cluster, so the loss of one node moves only its share of
the processes, instead of every process that had queued up on the first node listed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from aio_pika import RobustConnection
from aio_pika.abc import UnderlayConnection
from yarl import URL


def start_index(count: int) -> int:
    """Where a process starts in the list of nodes: at random, from the system's source,
    so that processes started in the same instant do not all pick the same node."""
    return random.SystemRandom().randrange(count)


def node_label(url: URL) -> str:
    """host:port of a node, for logs: no user, no password."""
    return f"{url.host}:{url.port}"


class ClusterConnection(RobustConnection):
    """A robust connection whose every attempt goes to the next node of `nodes`."""

    def __init__(self, nodes: Sequence[URL], start: int = 0, **kwargs: Any) -> None:
        if not nodes:
            raise ValueError("a connection needs at least one node")
        super().__init__(nodes[start % len(nodes)], **kwargs)
        self._next = start % len(nodes)
        self._nodes = tuple(nodes)  # last: the base class's __init__ made no attempt

    @property
    def node(self) -> str:
        """The node this connection is on (or trying), as host:port."""
        return node_label(self.url)

    # aio-pika's reconnect loop clears the transport just before each connection attempt
    # and connects to `self.url`: that is where the next node is chosen. Clearing it on
    # close (`close_called`) or in the base class's __init__ (no nodes yet) is no attempt.
    @property
    def transport(self) -> UnderlayConnection | None:
        return self._transport

    @transport.setter
    def transport(self, value: UnderlayConnection | None) -> None:
        nodes: tuple[URL, ...] | None = getattr(self, "_nodes", None)
        if value is None and nodes is not None and not self.close_called:
            self.url = nodes[self._next]
            self._next = (self._next + 1) % len(nodes)
        self._transport = value
