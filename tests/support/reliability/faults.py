"""Faults injected into a running system, each scoped to this test's own processes.

The services are shared with other test runs, so nothing here acts on the whole
broker, Redis or PostgreSQL: the broker closes only the connections whose client port
belongs to one of this test's processes, Redis kills only the clients of this test's
proxy, and PostgreSQL terminates only backends of this session's database whose client
port belongs to one of this test's processes.

After every fault a new customer says hello (the probe); the time from the fault (or
from its end, for an outage) until that customer was answered is the recovery time.
"""

from __future__ import annotations

import asyncio
import functools
import random
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import asyncpg
from aio_pika.abc import AbstractChannel
from redis.asyncio import Redis

from orderbot.amqp.topology import Topology
from tests.support.reliability.chaos_provider import ChaosChat2Desk, Mode
from tests.support.reliability.load import Load
from tests.support.reliability.system import System, tcp_peers
from tests.support.tcp_proxy import TcpProxy

OUTAGE_SECONDS = (2.0, 4.0)  # how long Redis or the provider stays unavailable
BROKER_OUTAGE_SECONDS = (20.0, 30.0)  # how long the server cannot reach the broker
CONSUMERS_BACK_TIMEOUT = 15.0  # "within seconds": aio-pika retries every 5 s
SEND_SLACK = 1.0  # seconds between a step's send and its commit, a 2xx and its arrival


@dataclass(frozen=True)
class FaultRecord:
    kind: str
    at: float  # seconds since the load started, when the fault began
    lasted: float  # seconds it lasted (0 for an instant one: a kill, a close)
    detail: str
    recovered_in: float | None  # seconds from its end until a new customer was answered
    # Can this fault make a reply go out twice? A step cut after its send and before its
    # commit (its process killed, Redis lost for the commit) sends it again on redelivery.
    may_duplicate: bool
    began: float  # time.monotonic() when it began

    def explains(self, born: float, first: float) -> bool:
        """Could this fault have made a reply go out twice, whose message was accepted at
        `born` and which was first delivered at `first`? Only if it struck while the
        reply was on its way: not before the message came in, and not after the step
        that sent it committed (just after `first`). Copies made meanwhile (a step
        retried after publishing the reply to the outbox) may go out much later."""
        ended = self.began + self.lasted
        return (
            self.may_duplicate and born <= ended + SEND_SLACK and self.began <= first + SEND_SLACK
        )


@dataclass
class Faults:
    system: System
    load: Load
    redis_proxy: TcpProxy
    amqp_proxy: TcpProxy  # the server's way to the broker in the broker-outage scenario
    provider: ChaosChat2Desk
    admin_redis: Redis  # a direct connection, not through the proxy
    db: asyncpg.Connection  # to this session's database
    amqp: AbstractChannel  # the test's own channel, to count consumers
    topology: Topology
    amqp_port: int
    postgres_port: int
    rng: random.Random
    # Faults of other suites by kind (tests/ha's node loss), given this object to report to.
    extra: Mapping[str, Callable[[Faults], Awaitable[None]]] = field(default_factory=dict)
    records: list[FaultRecord] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    _started: float = field(default_factory=time.monotonic)

    async def inject(self, kinds: Sequence[str], seconds: float) -> None:
        """Faults of `kinds` at random moments, one after the other, for `seconds`.

        Kinds: kill, broker, redis_kill, redis_outage, postgres, provider_fail,
        provider_throttle, provider_slow, sigterm, broker_outage.
        """
        actions: dict[str, Callable[[], Awaitable[None]]] = {
            "kill": self.kill_process,
            "broker": self.close_broker_connections,
            "redis_kill": self.kill_redis_clients,
            "redis_outage": self.redis_outage,
            "postgres": self.terminate_postgres_backends,
            "provider_fail": lambda: self.provider_outage("fail"),
            "provider_throttle": lambda: self.provider_outage("throttle"),
            "provider_slow": lambda: self.provider_outage("slow"),
            "sigterm": self.sigterm_everything,
            "broker_outage": self.broker_outage,
            **{kind: functools.partial(action, self) for kind, action in self.extra.items()},
        }
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while loop.time() < until:
            # A random moment of the load, which goes on meanwhile: a schedule, not a wait.
            await asyncio.sleep(self.rng.uniform(0.3, 1.5))
            await actions[self.rng.choice(list(kinds))]()

    async def recovered(
        self,
        kind: str,
        detail: str,
        since: float,
        *,
        may_duplicate: bool,
        began: float | None = None,
    ) -> None:
        """Record the fault that began at `began` and ended at `since` once a new
        customer was answered end to end (the recovery time is measured from `since`)."""
        began = since if began is None else began
        answered = await self.load.probe()
        self.records.append(
            FaultRecord(
                kind=kind,
                at=round(began - self._started, 2),
                lasted=round(since - began, 2),
                detail=detail,
                recovered_in=round(time.monotonic() - since, 2) if answered else None,
                may_duplicate=may_duplicate,
                began=began,
            )
        )

    async def kill_process(self) -> None:
        """SIGKILL a worker, the outbox worker or the server at a random moment; restart it."""
        victim = self.rng.choice(self.system.processes)
        since = time.monotonic()
        await self.system.kill(victim)
        await self.system.replace(victim)
        # The server sends no replies; a worker or the outbox worker may die mid-step.
        await self.recovered(
            "kill", f"SIGKILL {victim.role}", since, may_duplicate=victim.role != "server"
        )

    async def close_broker_connections(self) -> None:
        """The broker closes every connection of this test's processes (`close_connection`)."""
        since = time.monotonic()
        # None closed: a concurrent fault (SIGTERM, kill) closed them first, which is fine.
        ports, closed = await close_broker_connections_of(self.system.pids(), self.amqp_port)
        back_in = await self._consumers_back(ports)
        detail = f"closed {closed} connection(s); consumers back in {back_in}s"
        await self.recovered("broker", detail, since, may_duplicate=False)

    async def _consumers_back(self, closed_ports: set[int]) -> float | None:
        """Seconds until every process has a new broker connection, every worker consumes
        `messages` again and the outbox worker `outbox`."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(CONSUMERS_BACK_TIMEOUT):
                while not await self._all_consuming(closed_ports):
                    await asyncio.sleep(0.05)
        except TimeoutError:
            self.problems.append("consumers did not come back after the broker closed them")
            return None
        return round(time.monotonic() - started, 2)

    async def _all_consuming(self, closed_ports: set[int]) -> bool:
        for pid in self.system.pids():
            ports = tcp_peers([pid], self.amqp_port)
            if not ports or ports & closed_ports:
                return False
        outbox = await self.amqp.declare_queue(self.topology.outbox, passive=True)
        if outbox.declaration_result.consumer_count != 1:
            return False
        for name in self.topology.partitions:  # each has its worker again
            partition = await self.amqp.declare_queue(name, passive=True)
            if not partition.declaration_result.consumer_count:
                return False
        return True

    async def kill_redis_clients(self) -> None:
        """Redis drops every connection of this test's processes (`CLIENT KILL ADDR`)."""
        killed = 0
        since = time.monotonic()
        for port in self.redis_proxy.upstream_ports():
            killed += int(await self.admin_redis.client_kill_filter(addr=f"127.0.0.1:{port}"))
        await self.recovered("redis_kill", f"killed {killed} client(s)", since, may_duplicate=True)

    async def redis_outage(self) -> None:
        """Redis unreachable for a few seconds: connections refused, or hanging."""
        mode = self.rng.choice(["refuse", "blackhole"])
        seconds = self.rng.uniform(*OUTAGE_SECONDS)
        began = time.monotonic()
        self.redis_proxy.outage(mode)
        await asyncio.sleep(seconds)  # the length of the outage
        self.redis_proxy.restore()
        since = time.monotonic()
        detail = f"{mode} for {seconds:.1f}s"
        await self.recovered("redis_outage", detail, since, may_duplicate=True, began=began)

    async def broker_outage(self) -> None:
        """The server cannot reach the broker for 20-30 s: connections refused. It must
        answer every webhook 2xx meanwhile (the edge spool) and lose none."""
        seconds = self.rng.uniform(*BROKER_OUTAGE_SECONDS)
        began = time.monotonic()
        self.amqp_proxy.outage("refuse")
        await asyncio.sleep(seconds)  # the length of the outage
        self.amqp_proxy.restore()
        since = time.monotonic()
        detail = f"server cut from the broker for {seconds:.1f}s"
        await self.recovered("broker_outage", detail, since, may_duplicate=False, began=began)

    async def terminate_postgres_backends(self) -> None:
        """`pg_terminate_backend` for this test's processes' backends in this database."""
        ports = sorted(tcp_peers(self.system.pids(), self.postgres_port))
        since = time.monotonic()
        terminated = await self.db.fetchval(
            """
            SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
            FROM pg_stat_activity
            WHERE datname = current_database() AND pid <> pg_backend_pid()
              AND client_port = ANY($1::int[])
            """,
            ports,
        )
        detail = f"terminated {terminated} backend(s)"
        await self.recovered("postgres", detail, since, may_duplicate=False)

    async def provider_outage(self, mode: Mode) -> None:
        """Chat2Desk answers 500, or 429 with Retry-After, or too slowly, for a few seconds."""
        seconds = self.rng.uniform(*OUTAGE_SECONDS)
        began = time.monotonic()
        self.provider.set_mode(mode)
        await asyncio.sleep(seconds)  # the length of the outage
        self.provider.set_mode("ok")
        since = time.monotonic()
        # A stalled send the worker gave up on is still delivered: the provider's log
        # marks it late, and that explains its repeat (not the outage as a whole).
        await self.recovered(
            f"provider_{mode}", f"{seconds:.1f}s", since, may_duplicate=False, began=began
        )

    async def sigterm_everything(self) -> None:
        """SIGTERM to every process at once: each drains and exits 0; then all start again."""
        since = time.monotonic()
        exits = await self.system.stop_all()
        unclean = [e for e in exits if e.status != 0]
        self.problems.extend(f"{e.label} exited {e.status} after SIGTERM" for e in unclean)
        slowest = max((e.seconds for e in exits), default=0.0)
        await self.system.start()
        detail = f"{len(exits) - len(unclean)}/{len(exits)} exited 0, slowest in {slowest:.1f}s"
        await self.recovered("sigterm", detail, since, may_duplicate=False)


async def close_broker_connections_of(pids: list[int], amqp_port: int) -> tuple[set[int], int]:
    """Have the broker close the connections these processes hold to it.

    Returns their local ports and how many the broker closed. Connections are matched
    by the client port the broker reports, so other tests' connections stay untouched.
    """
    ports = tcp_peers(pids, amqp_port)
    listing = await _run(
        "rabbitmqctl", "-q", "--no-table-headers", "list_connections", "pid", "peer_port"
    )
    ours = [
        pid
        for pid, port in (line.split("\t") for line in listing.splitlines() if "\t" in line)
        if int(port) in ports
    ]
    results = await asyncio.gather(
        *(_run("rabbitmqctl", "-q", "close_connection", pid, "reliability test") for pid in ours),
        return_exceptions=True,  # a connection that closed meanwhile cannot be closed
    )
    return ports, len([r for r in results if not isinstance(r, BaseException)])


async def _run(*command: str) -> str:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(30):
        stdout, stderr = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {stderr.decode(errors='replace')}")
    return stdout.decode()


async def rabbitmqctl_usable() -> bool:
    """rabbitmqctl is installed and may talk to the local node (root, or the Erlang cookie)."""
    if shutil.which("rabbitmqctl") is None:
        return False
    try:
        await _run("rabbitmqctl", "-q", "list_connections", "name")
    except (RuntimeError, TimeoutError, OSError):
        return False
    return True
