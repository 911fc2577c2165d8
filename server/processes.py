"""SERVER_PROCESSES: several whole servers on one port, so that webhooks use more than
one core (one Python process serves on one).

The process that was started (by pm2, systemd or docker) starts the others itself, each
`python -m server` with its index in ORDERBOT_SERVER_PROCESS, and keeps them running:
one that exits is started again. Every process listens on HTTP_PORT with SO_REUSEPORT,
and the kernel spreads new connections across them. Each is a full server: its own
broker connection and publish channel, its own spool file (named for its index, and
locked by it, server/spool.py), its own metrics; a message's partition is chosen from
the customer, never from the process, so a customer's order holds whichever process
takes their webhook. A sibling that refuses its settings (a taken ops port, say) stops
them all, the first exiting with status 2 as for its own. Stopping the first process
stops the others (SIGTERM, each drains what it holds); a first process killed outright
takes them down the same way, since each asked the kernel for SIGTERM when its parent dies.

A sibling that keeps dying soon after it starts (a crash at start-up that is not a settings
error) is started again after a delay that doubles each time, up to RESTART_DELAY_MAX: the
first process goes on serving and the log shows the sibling failing, without a restart
every second for ever. One that ran for RESTART_STEADY before it died starts the count
afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator

import structlog

from orderbot.config.settings import ConfigError, Settings

log = structlog.get_logger(__name__)

INDEX_ENV = "ORDERBOT_SERVER_PROCESS"
RESTART_DELAY = 1.0  # seconds before a sibling that exited is started again
RESTART_DELAY_MAX = 60.0
RESTART_STEADY = 60.0  # seconds a sibling must have run for its next restart to be quick
CONFIG_ERROR = 2  # the exit status of a process that refused its settings (bootstrap)
_PR_SET_PDEATHSIG = 1


def process_index() -> int:
    """This process's index among the server's processes: 0 for the one started."""
    return int(os.environ.get(INDEX_ENV, "0"))


def check_processes(settings: Settings) -> None:
    if settings.server_processes == 1:
        return
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigError("SERVER_PROCESSES > 1 needs SO_REUSEPORT, which this system lacks")
    if settings.http_port == 0:
        raise ConfigError("SERVER_PROCESSES > 1 needs a fixed HTTP_PORT (0 picks one per process)")


def spool_name(settings: Settings) -> str:
    """The name of this process's own spool file: one per process, stable across its
    restarts, so a restarted sibling finds its own messages first."""
    index = process_index()
    return f"edge-{settings.http_port}" if index == 0 else f"edge-{settings.http_port}-{index}"


def sibling_env(settings: Settings, index: int) -> dict[str, str]:
    """The environment of sibling `index`: this one's, with its index and its own ops
    ports (two processes cannot serve one metrics port and be told apart)."""
    env = {**os.environ, INDEX_ENV: str(index)}
    if settings.server_metrics_port is not None:
        env["SERVER_METRICS_PORT"] = str(settings.server_metrics_port + index)
    if settings.metrics_port:
        env["METRICS_PORT"] = str(settings.metrics_port + index)
    return env


def restart_delay(previous: float | None, ran: float) -> float:
    """How long to wait before starting again a sibling that ran `ran` seconds, whose
    last restart waited `previous` (None: it has not been restarted yet)."""
    if previous is None or ran >= RESTART_STEADY:
        return RESTART_DELAY
    return min(previous * 2, RESTART_DELAY_MAX)


def _stop_with_parent() -> None:
    """In the sibling, before exec: SIGTERM it when the first process dies, however."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Siblings:
    """The other server processes of this one, kept running until `stop()`."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.failed = asyncio.Event()  # a sibling could not start: see `failure`
        self.failure: ConfigError | None = None

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._keep_running(index), name=f"server-process-{index}")
            for index in range(1, self._settings.server_processes)
        ]

    def stop(self) -> None:
        """Tell every sibling to stop (SIGTERM); `wait()` for them to have drained."""
        self._stopping.set()

    async def wait(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _keep_running(self, index: int) -> None:
        delay: float | None = None
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            started = loop.time()
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "server",
                env=sibling_env(self._settings, index),
                preexec_fn=_stop_with_parent,
            )
            log.info("server_process_started", index=index, pid=process.pid)
            exited = asyncio.create_task(process.wait())
            stopping = asyncio.create_task(self._stopping.wait())
            try:
                await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                # The sibling bounds its own drain (SHUTDOWN_TIMEOUT), as this one does.
                await asyncio.shield(exited)
            if self._stopping.is_set():
                return
            if process.returncode == CONFIG_ERROR:  # it said why; starting it again cannot help
                self.failure = ConfigError(
                    f"server process {index} could not start (see its line above)"
                )
                self.failed.set()
                return
            delay = restart_delay(delay, loop.time() - started)
            log.error(
                "server_process_exited", index=index, status=process.returncode, restart_in=delay
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()


@contextlib.asynccontextmanager
async def siblings(settings: Settings) -> AsyncIterator[Siblings | None]:
    """The first process's siblings, started now and stopped (and waited for) on exit;
    None in a sibling, or with one process."""
    if settings.server_processes == 1 or process_index() != 0:
        yield None
        return
    group = Siblings(settings)
    group.start()
    try:
        yield group
    finally:
        group.stop()
        await group.wait()
