"""Running orderbot's real processes (python -m server/worker/outbox_worker) in tests.

Crash and shutdown guarantees can only be shown on a real process: SIGKILL and
SIGTERM go to a child, and its exit status and log are what the test reads.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp

MODULES = {"server": "server", "worker": "worker", "outbox_worker": "outbox_worker"}
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL it when the test run dies. A killed pytest
    never reaches its fixtures' teardown, and orphans would go on consuming (and so
    keep) the run's queues."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class OrderbotProcess:
    def __init__(self, role: str, env: dict[str, str], log_path: Path, cwd: Path) -> None:
        self.role = role
        self.env = env
        self.log_path = log_path
        self.cwd = cwd
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> OrderbotProcess:
        log = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            MODULES[self.role],
            env={**os.environ, **self.env},
            cwd=self.cwd,
            stdout=log,
            stderr=log,
            preexec_fn=_die_with_parent,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def send(self, signum: signal.Signals) -> None:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signum)

    async def wait(self, timeout: float = 60) -> int:
        """The exit status; TimeoutError if it still runs after `timeout`, carrying the
        end of its log, which says where it was stuck."""
        assert self.process is not None
        try:
            async with asyncio.timeout(timeout):
                return await self.process.wait()
        except TimeoutError:
            tail = self.logs()[-3000:]
            raise TimeoutError(f"{self.role} still running after {timeout}s:\n{tail}") from None

    async def stop(self, timeout: float = 60) -> int:
        self.send(signal.SIGTERM)
        return await self.wait(timeout)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def wait_log(self, needle: str, timeout: float = 30) -> None:
        """Wait until the process logged `needle` (it writes line by line)."""
        async with asyncio.timeout(timeout):
            while needle not in self.logs():
                if self.process is not None and self.process.returncode is not None:
                    raise AssertionError(f"{self.role} exited early:\n{self.logs()[-3000:]}")
                await asyncio.sleep(0.02)


async def wait_http_ok(url: str, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout), aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)


def free_ports_in_a_row(count: int) -> int:
    """The first of `count` consecutive ports free now, for a process that serves on a
    base port and the ones after it. A port the kernel picks for bind() is usually even,
    the one after it odd, and odd ones are what it picks for outgoing connections, so
    `free_port() + 1` is often the local port of some connection on a busy machine."""
    for _ in range(100):
        base = free_port()
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports found")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def orderbot_cli(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """Run `orderbot ARGS` as an operator would; returns (status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orderbot.cli.main",
        *args,
        env={**os.environ, **env},
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        process.kill()  # a command that did not end must not outlive the test
        await process.wait()
        raise
    return await process.wait(), stdout.decode(), stderr.decode()
