"""The whole system as real processes: one server, workers, one outbox worker.

Processes are started through the `spawn` fixture (which kills whatever is left at the
end of the test), replaced when a fault killed them, and stopped with SIGTERM at the end
so that every unacknowledged message is back in its queue before the books are read.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.processes import OrderbotProcess, wait_http_ok

Spawn = Callable[..., Awaitable[OrderbotProcess]]

TASKDUMP = Path(__file__).parent / "taskdump"
READY_TIMEOUT = 30.0
# SHUTDOWN_TIMEOUT of the system (10 s in tests/conftest.py) plus the runner's margin.
STOP_TIMEOUT = 20.0


@dataclass(frozen=True)
class Exit:
    label: str
    status: int | None  # None: still running STOP_TIMEOUT after SIGTERM (then killed)
    seconds: float


@dataclass
class System:
    spawn: Spawn
    env: dict[str, str]
    http_port: int
    worker_count: int = 2
    role_env: dict[str, dict[str, str]] = field(default_factory=dict)  # per role, over env
    server: OrderbotProcess | None = None
    workers: list[OrderbotProcess] = field(default_factory=list)
    outbox: OrderbotProcess | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def processes(self) -> list[OrderbotProcess]:
        roles = [self.server, *self.workers, self.outbox]
        return [p for p in roles if p is not None]

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.process and p.process.returncode is None]

    async def start(self) -> None:
        """Start every role (again, after stop_all) and wait until each is ready."""
        self.server = await self._start("server")
        self.workers = [await self._start("worker") for _ in range(self.worker_count)]
        self.outbox = await self._start("outbox_worker")
        await asyncio.gather(*(self._ready(p) for p in self.processes))

    async def start_role(self, role: str) -> OrderbotProcess:
        """Start one more process of `role` and wait until it is ready."""
        process = await self._start(role)
        if role == "server":
            self.server = process
        elif role == "outbox_worker":
            self.outbox = process
        else:
            self.workers.append(process)
        await self._ready(process)
        return process

    async def _start(self, role: str) -> OrderbotProcess:
        env = {**self.env, **self.role_env.get(role, {})}
        if role == "server":
            env["HTTP_PORT"] = str(self.http_port)
        return await self.spawn(role, **env)

    async def _ready(self, process: OrderbotProcess) -> None:
        try:
            if process.role == "server":
                await process.wait_log('"broker_connected"', timeout=READY_TIMEOUT)
                await wait_http_ok(f"{self.base_url}/health", timeout=READY_TIMEOUT)
            else:
                await process.wait_log('"consuming"', timeout=READY_TIMEOUT)
        except TimeoutError:
            await self._dump_tasks([process])  # where its start-up waits
            raise AssertionError(
                f"{process.log_path.stem} not ready in {READY_TIMEOUT}s; its log and tasks:\n"
                + process.logs()[-6000:]
            ) from None

    async def replace(self, dead: OrderbotProcess) -> OrderbotProcess:
        """Start a new process in the role of `dead` (which has exited) and wait until ready."""
        fresh = await self._start(dead.role)
        if dead is self.server:
            self.server = fresh
        elif dead is self.outbox:
            self.outbox = fresh
        else:
            self.workers[self.workers.index(dead)] = fresh
        await self._ready(fresh)
        return fresh

    async def kill(self, process: OrderbotProcess) -> None:
        process.send(signal.SIGKILL)
        await process.wait(timeout=STOP_TIMEOUT)

    async def stop_all(self) -> list[Exit]:
        """SIGTERM to every process at once; their exit statuses and how long each took."""
        running = [p for p in self.processes if p.process and p.process.returncode is None]
        started = time.monotonic()
        for process in running:
            process.send(signal.SIGTERM)

        async def exit_of(process: OrderbotProcess) -> Exit:
            try:
                status: int | None = await process.wait(timeout=STOP_TIMEOUT)
            except TimeoutError:
                status = None
                await self.kill(process)
            return Exit(process.log_path.stem, status, time.monotonic() - started)

        return list(await asyncio.gather(*(exit_of(p) for p in running)))

    async def dump_tasks(self) -> None:
        """Have every live process log its asyncio tasks (tests/reliability/taskdump)."""
        await self._dump_tasks(self.processes)

    async def _dump_tasks(self, processes: list[OrderbotProcess]) -> None:
        live = [p for p in processes if p.process and p.process.returncode is None]
        marks = {p: p.logs().count('"task_dump_end"') for p in live}
        for process in live:
            process.send(signal.SIGUSR1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                for process in live:
                    while process.logs().count('"task_dump_end"') <= marks[process]:
                        await asyncio.sleep(0.05)


def process_env(overrides: dict[str, str]) -> dict[str, str]:
    """The environment of the system's processes: `overrides`, and the task dump hook."""
    paths = [str(TASKDUMP), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**overrides, "PYTHONPATH": os.pathsep.join(paths)}


def tcp_peers(pids: list[int], remote_port: int) -> set[int]:
    """Local ports of the TCP connections that processes `pids` hold to `remote_port`.

    This scopes a broker- or database-side fault to this test's processes: the shared
    services also serve other test runs, whose connections must not be touched.
    """
    inodes: set[str] = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:  # the process just exited
            continue
        for fd in fds:
            try:
                link = str(fd.readlink())
            except OSError:  # closed meanwhile
                continue
            if link.startswith("socket:["):
                inodes.add(link[len("socket:[") : -1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            columns = row.split()
            local, remote, inode = columns[1], columns[2], columns[9]
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == remote_port:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports
