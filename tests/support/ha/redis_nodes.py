"""A Redis master, its replica and three Sentinels, started by a test on ports of its own.

Each node is a `redis-server` process with its own directory under a temporary one
(Sentinels rewrite their configuration file as they learn the group), nothing saved to
disk, stopped by its pid at the end, at exit, and so also after an interrupted run.
The Sentinels declare a master down after DOWN_AFTER_MS without an answer, so a
failover takes about two seconds here; production values are longer (docs/scaling.md).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.support.processes import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
MASTER_NAME = "orderbot-ha"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
QUORUM = 2
START_TIMEOUT = 20.0


@dataclass
class Node:
    name: str
    port: int
    directory: Path
    command: list[str]
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            self.command, cwd=self.directory, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        _running.add(self.process.pid)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last write to anyone."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        if self.process is not None:
            _running.discard(self.process.pid)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        if self.process is not None:
            _running.discard(self.process.pid)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)


@dataclass
class SentinelGroup:
    data: list[Node]  # the first is the master at start
    sentinels: list[Node]
    name: str = MASTER_NAME
    _by_port: dict[int, Node] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_port = {node.port: node for node in self.data}

    @property
    def sentinel_setting(self) -> str:
        """REDIS_SENTINELS for the processes."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def master_port(self) -> int | None:
        """The master as the Sentinels see it now: the port most of them name."""
        votes: dict[int, int] = {}
        for sentinel in self.sentinels:
            with contextlib.suppress(redis.RedisError, OSError):
                with sentinel.client() as client:
                    address = client.sentinel_get_master_addr_by_name(self.name)
                if address:
                    votes[int(address[1])] = votes.get(int(address[1]), 0) + 1
        if not votes:
            return None
        port, count = max(votes.items(), key=lambda item: item[1])
        return port if count >= QUORUM else None

    def master(self) -> Node:
        port = self.master_port()
        assert port is not None, "the Sentinels agree on no master"
        return self._by_port[port]

    def wait_until_whole(self, timeout: float = START_TIMEOUT) -> None:
        """Until the Sentinels agree on a master that answers, its replica is in sync,
        and each Sentinel knows the other two and the replica."""
        deadline = time.monotonic() + timeout
        last = "nothing"
        while time.monotonic() < deadline:
            try:
                last = self._whole()
                if not last:
                    return
            except (redis.RedisError, OSError) as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise TimeoutError(f"the Sentinel group did not settle: {last}")

    def _whole(self) -> str:
        port = self.master_port()
        if port is None:
            return "no master agreed on"
        for node in self.data:
            with node.client() as client:
                info = client.info("replication")
            if node.port == port:
                if info["role"] != "master" or info.get("connected_slaves", 0) < 1:
                    return f"{node.name}: not a master with a replica yet"
            elif info["role"] != "slave" or info.get("master_link_status") != "up":
                return f"{node.name}: not a replica in sync yet"
        for sentinel in self.sentinels:
            with sentinel.client() as client:
                state = client.sentinel_master(self.name)
            if int(state["num-other-sentinels"]) < 2 or int(state["num-slaves"]) < 1:
                return f"{sentinel.name}: does not know the whole group yet"
            if int(state["port"]) != port or "s_down" in state.get("flags", ""):
                return f"{sentinel.name}: sees another or a down master"
        return ""

    def restart(self, node: Node) -> None:
        """Start a killed node again on its port; the Sentinels make it a replica of the
        master they promoted meanwhile."""
        node.start()


# Pids of every node started and not yet stopped: killed at exit too.
_running: set[int] = set()


@atexit.register
def _kill_leftovers() -> None:
    for pid in list(_running):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def running_sentinel_group() -> Iterator[SentinelGroup]:
    root = Path(tempfile.mkdtemp(prefix="orderbot-sentinel-"))
    data: list[Node] = []
    sentinels: list[Node] = []
    try:
        master_port = free_port()
        for index, name in enumerate(("master", "replica")):
            port = master_port if index == 0 else free_port()
            directory = root / name
            directory.mkdir()
            command = [
                REDIS_SERVER,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--dir", str(directory),
                "--save", "",
                "--appendonly", "no",
                "--protected-mode", "no",
            ]  # fmt: skip
            if index == 1:
                command += ["--replicaof", "127.0.0.1", str(master_port)]
            data.append(Node(name, port, directory, command))
        for index in range(3):
            port = free_port()
            directory = root / f"sentinel-{index}"
            directory.mkdir()
            conf = directory / "sentinel.conf"
            conf.write_text(
                f"port {port}\n"
                "bind 127.0.0.1\n"
                "protected-mode no\n"
                f"dir {directory}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {QUORUM}\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            sentinels.append(
                Node(f"sentinel-{index}", port, directory, [REDIS_SERVER, str(conf), "--sentinel"])
            )
        for node in (*data, *sentinels):
            node.start()
        group = SentinelGroup(data=data, sentinels=sentinels)
        group.wait_until_whole()
        yield group
    finally:
        for node in (*sentinels, *data):
            node.stop()
        shutil.rmtree(root, ignore_errors=True)
