"""A fault for the reliability harness: the node holding the partitions' leaders stops.

Once, at a random moment of the load, the node is taken down as an operator would
(`rabbitmqctl stop`). Then, while the load goes on, it waits until every process of
the system holds a connection to a node still up and every partition, and the outbox,
has its consumer again; and the harness's probe (a new customer says hello) measures
the recovery: from the stop until that customer is answered.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from tests.support.ha.rabbit_cluster import Node, RabbitCluster
from tests.support.reliability.faults import Faults
from tests.support.reliability.system import tcp_peers
from tests.support.tcp_proxy import TcpProxy

CONSUMERS_BACK_TIMEOUT = 60.0


@dataclass
class LeaderNodeLoss:
    cluster: RabbitCluster
    victim: Node
    # Proxies to the other nodes that refused until the server was on the victim.
    held_back: list[TcpProxy] = field(default_factory=list)
    done: bool = False
    began: float | None = None  # time.monotonic() when the stop was asked for
    gone: float | None = None  # time.monotonic() when the node's process had exited
    on_victim: list[str] = field(default_factory=list)  # processes connected to it
    stopped_in: float | None = None  # seconds `rabbitmqctl stop` took
    reconnected_in: float | None = None  # from the stop until all consumed again
    leaders_after: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    async def __call__(self, faults: Faults) -> None:
        if self.done:  # once per scenario: the other calls are the schedule going on
            return
        self.done = True
        for proxy in self.held_back:
            proxy.restore()
        system = faults.system
        self.on_victim = [
            process.log_path.stem
            for process in system.processes
            if process.process is not None and tcp_peers([process.pid], self.victim.amqp_port)
        ]
        since = self.began = time.monotonic()
        await self.cluster.stop_node(self.victim)
        self.gone = time.monotonic()
        self.stopped_in = round(self.gone - since, 2)
        await self._consumers_back(faults, since)
        survivors = [n for n in self.cluster.nodes if n is not self.victim]
        self.leaders_after = await self.cluster.leaders(
            survivors[0], [*faults.topology.partitions, faults.topology.outbox]
        )
        detail = (
            f"stopped {self.victim.name} (in {self.stopped_in}s) with "
            f"{', '.join(self.on_victim) or 'no process'} on it; consumers back in "
            f"{self.reconnected_in}s"
        )
        await faults.recovered("node_stop", detail, since, may_duplicate=False)

    async def _consumers_back(self, faults: Faults, since: float) -> None:
        ports = [n.amqp_port for n in self.cluster.nodes if n is not self.victim]
        try:
            async with asyncio.timeout(CONSUMERS_BACK_TIMEOUT):
                while not await self._all_consuming(faults, ports):
                    await asyncio.sleep(0.1)  # a poll of the broker's view, not a wait for time
        except TimeoutError:
            self.problems.append("consumers did not come back after the node stopped")
            return
        self.reconnected_in = round(time.monotonic() - since, 2)

    async def _all_consuming(self, faults: Faults, ports: list[int]) -> bool:
        for pid in faults.system.pids():
            if tcp_peers([pid], self.victim.amqp_port):
                return False
            if not any(tcp_peers([pid], port) for port in ports) and not self._via_proxy(pid):
                return False
        survivor = next(n for n in self.cluster.nodes if n is not self.victim)
        try:
            consumers = await self.cluster.consumers(survivor)
        except RuntimeError:  # the cluster is still busy with the loss
            return False
        queues = [*faults.topology.partitions, faults.topology.outbox]
        return all(consumers.get(name, 0) >= 1 for name in queues)

    def _via_proxy(self, pid: int) -> bool:
        return any(tcp_peers([pid], proxy.port) for proxy in self.held_back)


def answers_around(deliveries: Iterable[float], began: float, gone: float) -> tuple[float, float]:
    """What the customers saw of the stop, from the provider's delivery times: seconds
    from the node's exit until the next reply reached anyone, and the longest time no
    reply reached anyone, from just before the stop until that first reply."""
    times = sorted(deliveries)
    after = [t for t in times if t > gone]
    if not after:
        return float("inf"), float("inf")
    first = after[0]
    window = [began, *(t for t in times if began < t <= first)]
    before = [t for t in times if t <= began]
    if before:
        window[0] = before[-1]
    silence = max((b - a for a, b in itertools.pairwise(window)), default=0.0)
    return round(first - gone, 2), round(silence, 2)
