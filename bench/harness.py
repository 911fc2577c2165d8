"""Real processes on loopback: start, watch (RSS, CPU), stop, and clean up after.

Each run gets its own QUEUE_PREFIX, REDIS_KEY_PREFIX and a throwaway database
(created and migrated the way `orderbot migrate` does it, dropped at the end), so
a benchmark never touches a developer's data and two runs never see each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import orjson
from redis.asyncio import Redis

from bench.httpclient import get_status
from orderbot.amqp.topology import Topology
from orderbot.config.settings import Settings
from orderbot.conversation.keys import Keys
from orderbot.orders.migrate import migrate

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"

WEBHOOK_TOKEN = "bench-webhook-token-3d9a"  # noqa: S105 (a throwaway test value)
API_TOKEN = "bench-api-token-77c1"  # noqa: S105 (a throwaway test value)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def say(message: str) -> None:
    """Progress on stderr, so a 10-minute run is not a silent one."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def uses_uvloop() -> bool:
    """Whether orderbot's processes run on uvloop, so the baselines can match them."""
    sources = [REPO / "orderbot" / "runtime" / "bootstrap.py", REPO / "server" / "app.py"]
    return any("uvloop" in path.read_text() for path in sources if path.exists())


@dataclass
class Usage:
    """Resident memory (now and the kernel's peak) and CPU seconds of one process."""

    rss_mb: float
    peak_rss_mb: float
    cpu_s: float


def usage(pid: int) -> Usage | None:
    """The process's memory, and the CPU of it and its running children: a server with
    SERVER_PROCESSES > 1 is the one process started and the others it runs."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    cpu = _cpu_s(pid)
    if cpu is None:
        return None
    values = {}
    for line in status.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, amount, _unit = line.split()
            values[key] = int(amount) / 1024
    for child in _children(pid):
        cpu += _cpu_s(child) or 0.0
    return Usage(values.get("VmRSS:", 0.0), values.get("VmHWM:", 0.0), cpu)


def _cpu_s(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _children(pid: int) -> list[int]:
    try:
        listed = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in listed.split()]


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU jiffies of the whole machine, for how loaded it was."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(v) for v in first]
    idle = ticks[3] + ticks[4]
    return float(sum(ticks) - idle), float(sum(ticks))


@dataclass
class Proc:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    peak_rss_mb: float = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def usage(self) -> Usage | None:
        found = usage(self.pid) if self.running else None
        if found is not None:
            self.peak_rss_mb = max(self.peak_rss_mb, found.peak_rss_mb)
        return found

    async def stop(self, within: float = 30.0) -> int:
        """SIGTERM, as pm2 or systemd would; SIGKILL only past the bound."""
        self.usage()
        if self.running:
            self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(within):
                return await self.process.wait()
        except TimeoutError:
            self.process.kill()
            return await self.process.wait()

    def tail(self, chars: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


async def spawn(
    name: str,
    args: list[str],
    env: Mapping[str, str],
    log_dir: Path,
    *,
    stdout_pipe: bool = False,
    stdin_pipe: bool = False,
    cwd: Path = REPO,
) -> Proc:
    """Start `python ARGS`. orderbot's processes get `cwd=log_dir`, where no `.env`
    can leak a developer's settings into the run (bench helpers need the repo)."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            env={**os.environ, **env},
            cwd=cwd,
            stdout=asyncio.subprocess.PIPE if stdout_pipe else log,
            stderr=log,
            stdin=asyncio.subprocess.PIPE if stdin_pipe else asyncio.subprocess.DEVNULL,
        )
    return Proc(name, process, log_path)


async def run_json(
    name: str, args: list[str], log_dir: Path, within: float, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Run a bench helper process to its end and read the JSON line it prints."""
    proc = await spawn(name, args, env or {}, log_dir, stdout_pipe=True)
    assert proc.process.stdout is not None
    try:
        async with asyncio.timeout(within):
            out = await proc.process.stdout.read()
            await proc.process.wait()
    except TimeoutError:
        proc.process.kill()
        await proc.process.wait()
        raise RuntimeError(f"{name} did not finish within {within}s:\n{proc.tail()}") from None
    if proc.process.returncode != 0 or not out.strip():
        raise RuntimeError(f"{name} failed ({proc.process.returncode}):\n{proc.tail()}")
    result: dict[str, Any] = orjson.loads(out.strip().splitlines()[-1])
    return result


async def wait_http(port: int, path: str = "/health", within: float = 30.0) -> None:
    async with asyncio.timeout(within):
        while True:
            with contextlib.suppress(Exception):
                if await get_status("127.0.0.1", port, path) == 200:
                    return
            await asyncio.sleep(0.05)


SERVICES = {"beam.smp": "rabbitmq", "redis-server": "redis", "postgres": "postgresql"}


def services_cpu() -> dict[str, float]:
    """CPU seconds so far of the broker, Redis and PostgreSQL (all their processes):
    on two cores they compete with ours, and a phase's figures need to say so."""
    totals = dict.fromkeys(SERVICES.values(), 0.0)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.find("(") + 1 : stat.rfind(")")]
        service = SERVICES.get(name)
        if service is not None:
            fields = stat.rsplit(")", 1)[1].split()
            totals[service] += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return totals


class Meter:
    """CPU shares of our processes, the services and the machine over one phase."""

    def __init__(self, procs: list[Proc]) -> None:
        self._procs = procs
        self._start = time.monotonic()
        self._cpu = {p.name: (u.cpu_s if (u := p.usage()) else 0.0) for p in procs}
        self._services = services_cpu()
        self._machine = machine_busy()

    def read(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self._start
        shares: dict[str, float] = {}
        for proc in self._procs:
            now = proc.usage()
            if now is not None:
                shares[proc.name] = round((now.cpu_s - self._cpu[proc.name]) / elapsed, 2)
        for service, cpu in services_cpu().items():
            shares[service] = round((cpu - self._services[service]) / elapsed, 2)
        busy, total = machine_busy()
        machine = (busy - self._machine[0]) / max(1.0, total - self._machine[1])
        cores = len(os.sched_getaffinity(0))
        # What neither our processes nor the services used: the load generator and
        # whatever else shares this machine (other sessions' tests, say).
        others = max(0.0, machine * cores - sum(shares.values()))
        return {"cores_used": shares, "machine_busy": round(machine, 2), "others": round(others, 2)}


@dataclass
class Stack:
    """orderbot's server and workers against the local services, in a namespace of their own."""

    log_dir: Path
    api_port: int
    extra_env: dict[str, str] = field(default_factory=dict)
    namespace: str = field(default_factory=lambda: f"bench{uuid.uuid4().hex[:8]}")
    server: Proc | None = None
    workers: list[Proc] = field(default_factory=list)
    retired: list[Proc] = field(default_factory=list)
    http_port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        base = Settings(_env_file=None)
        self.admin_url = base.database_url.rsplit("/", 1)[0] + "/postgres"
        self.database_url = base.database_url.rsplit("/", 1)[0] + f"/{self.namespace}"
        self.env: dict[str, str] = {
            "AMQP_URL": base.amqp_url,
            "REDIS_URL": base.redis_url,
            "DATABASE_URL": self.database_url,
            "QUEUE_PREFIX": f"{self.namespace}-",
            "REDIS_KEY_PREFIX": f"{self.namespace}:",
            "CHAT2DESK_API_URL": f"http://127.0.0.1:{self.api_port}",
            "CHAT2DESK_API_TOKEN": API_TOKEN,
            "CHAT2DESK_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
            # The limits stay on (their Redis scripts are part of the cost) but never bite:
            # a benchmark customer answers in milliseconds, a person in seconds.
            "CHAT2DESK_RATE_LIMIT": "100000000",
            "WEBHOOK_RATE_LIMIT_CUSTOMER": "100000000",
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(self.http_port),
            "SPOOL_DIR": str(Path(tempfile.gettempdir()) / f"{self.namespace}-spool"),
            "METRICS_PORT": "0",
            # BENCH_LOG_LEVEL=info measures what a production log level costs.
            "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "warning"),
            "LOG_FORMAT": "json",
            "SHUTDOWN_TIMEOUT": "10s",
            # BENCH_SERVER_PROCESSES=2 runs the server as two processes on its port.
            "SERVER_PROCESSES": os.environ.get("BENCH_SERVER_PROCESSES", "1"),
            **self.extra_env,
        }
        if self.env["SERVER_PROCESSES"] != "1":  # an ops port each, to know all are up
            self.env["SERVER_METRICS_PORT"] = str(free_port())
        self.settings = Settings(_env_file=None, **{k.lower(): v for k, v in self.env.items()})  # type: ignore[arg-type]
        self.topology = Topology.from_settings(self.settings)

    async def __aenter__(self) -> Stack:
        try:
            await migrate(self.database_url)
            self.server = await spawn(
                "server", ["-m", "server"], self.env, self.log_dir, cwd=self.log_dir
            )
            await wait_http(self.http_port)
            if "SERVER_METRICS_PORT" in self.env:
                first = int(self.env["SERVER_METRICS_PORT"])
                for index in range(int(self.env["SERVER_PROCESSES"])):
                    await wait_http(first + index, "/health/ready")
            await self.wait_queue_declared()
        except BaseException as exc:
            await self.__aexit__()  # a half-started stack still leaves nothing behind
            tail = self.server.tail() if self.server else ""
            raise RuntimeError(f"server did not start: {exc!r}\n{tail}") from exc
        return self

    async def __aexit__(self, *_: object) -> None:
        for proc in [*self.workers, *([self.server] if self.server else [])]:
            await proc.stop()
        self.retired.extend(self.workers)
        self.workers.clear()
        await self.cleanup()

    @property
    def procs(self) -> list[Proc]:
        return [p for p in [self.server, *self.workers] if p is not None]

    @contextlib.asynccontextmanager
    async def amqp(self) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
        connection = await aio_pika.connect(self.settings.amqp_url)
        try:
            yield await connection.channel()
        finally:
            await connection.close()

    async def wait_queue_declared(self, consumers: int = 0, within: float = 30.0) -> None:
        """Until the partitions of `messages` exist and, with `consumers` workers, every
        worker is in the roll call and every partition has its one consumer (workers log
        nothing at LOG_LEVEL=warning, so the broker and Redis are asked instead)."""
        roll_call = Keys(self.settings.redis_key_prefix).roll_call(self.topology.messages)
        redis = Redis.from_url(self.settings.redis_url)
        try:
            async with asyncio.timeout(within):
                while not await self._partitions_shared(redis, roll_call, consumers):  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
        finally:
            await redis.aclose()

    async def _partitions_shared(self, redis: Redis, roll_call: str, workers: int) -> bool:
        with contextlib.suppress(aio_pika.exceptions.AMQPError):
            async with self.amqp() as channel:
                counts = []
                for name in self.topology.partitions:
                    queue = await channel.declare_queue(name, passive=True)
                    counts.append(queue.declaration_result.consumer_count or 0)
            if workers == 0:
                return True
            return int(await redis.zcard(roll_call)) >= workers and all(c == 1 for c in counts)
        return False

    async def start_workers(self, count: int, env: dict[str, str] | None = None) -> None:
        """`env`: settings of these workers only (e.g. HISTORY_ENABLED)."""
        for _ in range(count):
            name = f"worker-{len(self.workers) + len(self.retired)}"
            self.workers.append(
                await spawn(
                    name,
                    ["-m", "worker"],
                    {**self.env, **(env or {})},
                    self.log_dir,
                    cwd=self.log_dir,
                )
            )
        try:
            await self.wait_queue_declared(consumers=len(self.workers))
        except TimeoutError:
            raise RuntimeError(f"workers did not start:\n{self.workers[0].tail()}") from None

    async def stop_workers(self) -> dict[str, int]:
        """SIGTERM every worker; their exit statuses (0 is a clean drain, guarantee 7)."""
        codes = {proc.name: await proc.stop() for proc in self.workers}
        self.retired.extend(self.workers)
        self.workers.clear()
        return codes

    async def purge_messages(self) -> int:
        purged = 0
        async with self.amqp() as channel:
            for name in self.topology.partitions:
                queue = await channel.declare_queue(name, passive=True)
                result = await queue.purge()
                purged += int(result.message_count or 0)
        return purged

    async def queue_depths(self) -> dict[str, int]:
        depths: dict[str, int] = {}
        async with self.amqp() as channel:
            for label, names in (
                ("messages", self.topology.partitions),
                ("outbox", (self.topology.outbox,)),
                ("dlq", (self.topology.dlq,)),
            ):
                depths[label] = 0
                for name in names:
                    queue = await channel.declare_queue(name, passive=True)
                    depths[label] += int(queue.declaration_result.message_count or 0)
        return depths

    async def count_history(self) -> int:
        conn = await asyncpg.connect(self.database_url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM messages"))
        finally:
            await conn.close()

    async def count_orders(self) -> int:
        conn = await asyncpg.connect(self.database_url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM orders"))
        finally:
            await conn.close()

    async def cleanup(self) -> None:
        """Delete this run's queues, Redis keys and database."""
        with contextlib.suppress(Exception):
            async with self.amqp() as channel:
                for name in self.topology.all_queues:
                    await channel.queue_delete(name)
        redis = Redis.from_url(self.settings.redis_url)
        try:
            batch: list[bytes] = []
            async for key in redis.scan_iter(match=f"{self.namespace}:*", count=5000):
                batch.append(key)
                if len(batch) >= 5000:
                    await redis.unlink(*batch)
                    batch.clear()
            if batch:
                await redis.unlink(*batch)
        finally:
            await redis.aclose()
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.namespace}" WITH (FORCE)')
        finally:
            await admin.close()
