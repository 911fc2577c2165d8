"""A RabbitMQ cluster of a few nodes on this host, started and stopped by the tests.

The shared broker (rabbit@localhost, AMQP 5672, distribution 25672) is never touched:
each node here has a name of its own (`obha1-<run>@localhost`), its own AMQP and
distribution ports, its own config file (the shared /etc/rabbitmq/rabbitmq.conf listens
on 5672), no plugins, and its data, logs and pid file in a directory of this run.

The nodes and the CLI calls made for them share an Erlang cookie made for this run, in
a HOME of its own: they need one cookie among themselves and no other node, and
neither the shared node's cookie nor the user's ~/.erlang.cookie is read or written.

A node runs in a process group of its own (the rabbitmq-server script and its Erlang
VM), stopped with `rabbitmqctl stop` and, if that does not end it, killed as a group.
Every group is recorded under RUNS_ROOT with the pid of the pytest process that
started it, so what a killed run left is found and killed by the next one (`sweep`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.processes import free_port

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
RUNS_ROOT = Path(tempfile.gettempdir()) / "orderbot-ha-rabbit"
BOOT_TIMEOUT = 120.0  # seconds for a node to boot on a busy machine
CTL_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0


def installed() -> bool:
    return Path(SERVER).exists() and Path(CTL).exists()


@dataclass
class Node:
    name: str  # obha1-<run>@localhost
    amqp_port: int
    dist_port: int
    base: Path
    process: subprocess.Popen[bytes] | None = None  # its rabbitmq-server, while it runs

    @property
    def group(self) -> int | None:
        """The process group of its rabbitmq-server script and Erlang VM."""
        return self.process.pid if self.process is not None else None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"


@dataclass
class RabbitCluster:
    run_dir: Path
    nodes: list[Node] = field(default_factory=list)

    @classmethod
    def create(cls, size: int) -> RabbitCluster:
        RUNS_ROOT.mkdir(parents=True, exist_ok=True)
        run = f"{os.getpid()}-{int(time.time())}"
        run_dir = RUNS_ROOT / run
        home = run_dir / "home"
        home.mkdir(parents=True)
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16).upper())
        cookie.chmod(0o400)
        (run_dir / "owner").write_text(f"{os.getpid()} {_started_at(os.getpid())}\n")
        (run_dir / "enabled_plugins").write_text("[].\n")
        (run_dir / "rabbitmq-env.conf").write_text("")
        nodes = []
        for index in range(1, size + 1):
            base = run_dir / f"n{index}"
            base.mkdir()
            node = Node(f"obha{index}-{os.getpid()}@localhost", free_port(), free_port(), base)
            (base / "rabbitmq.conf").write_text(
                f"listeners.tcp.1 = 127.0.0.1:{node.amqp_port}\n"
                "loopback_users = none\n"
                "disk_free_limit.absolute = 50MB\n"
                "log.console = false\n"
                "log.file.level = info\n"
            )
            nodes.append(node)
        return cls(run_dir, nodes)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def _env(self, node: Node | None = None) -> dict[str, str]:
        env = {
            **os.environ,
            "HOME": str(self.run_dir / "home"),
            "RABBITMQ_CONF_ENV_FILE": str(self.run_dir / "rabbitmq-env.conf"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        if node is not None:
            env |= {
                "RABBITMQ_NODENAME": node.name,
                "RABBITMQ_NODE_PORT": str(node.amqp_port),
                "RABBITMQ_DIST_PORT": str(node.dist_port),
                "RABBITMQ_CONFIG_FILE": str(node.base / "rabbitmq.conf"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(node.base / "advanced.config"),
                "RABBITMQ_MNESIA_BASE": str(node.base / "mnesia"),
                "RABBITMQ_LOG_BASE": str(node.base / "log"),
                "RABBITMQ_PID_FILE": str(node.base / "pid"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.run_dir / "enabled_plugins"),
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface "
                "{127,0,0,1}",
            }
        return env

    # --- starting -------------------------------------------------------------------

    def start(self) -> None:
        """Boot every node at once, then join the others to the first."""
        for node in self.nodes:
            self._launch(node)
        with ThreadPoolExecutor(len(self.nodes)) as pool:  # the boots overlap
            list(pool.map(self._await_startup, self.nodes))
        first = self.nodes[0]
        for node in self.nodes[1:]:
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", first.name)
            self.ctl(node, "start_app")
        self.ctl(first, "await_online_nodes", str(len(self.nodes)))

    def _await_startup(self, node: Node) -> None:
        """Until the node has booted. await_startup gives up at once on a node that has
        not yet registered its name, so it is asked again until then."""
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:
            try:
                self.ctl(node, "await_startup", "--timeout", str(int(BOOT_TIMEOUT)))
            except RuntimeError:
                if not self.running(node) or time.monotonic() > deadline:
                    log = (node.base / "stdout.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{node.name} did not boot:\n{log}") from None
                time.sleep(0.5)  # the CLI's own start is the slow part of each try
                continue
            return

    def _launch(self, node: Node) -> None:
        log = (node.base / "stdout.log").open("ab")
        process = subprocess.Popen(
            [SERVER],
            env=self._env(node),
            cwd=node.base,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        node.process = process
        self._record_groups()

    def _record_groups(self) -> None:
        groups = [str(n.group) for n in self.nodes if n.group is not None]
        (self.run_dir / "groups").write_text("\n".join(groups) + "\n")

    async def start_node(self, node: Node) -> None:
        """Boot a stopped member again; it rejoins its cluster by itself."""
        self._launch(node)
        await asyncio.to_thread(self._await_startup, node)

    def running(self, node: Node) -> bool:
        return node.process is not None and node.process.poll() is None

    # --- the CLI ----------------------------------------------------------------------

    def ctl(self, node: Node, *args: str) -> str:
        result = subprocess.run(
            [CTL, "-n", node.name, "-q", *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=CTL_TIMEOUT,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} on {node.name}: {result.stderr or result.stdout}"
            )
        return result.stdout

    async def actl(self, node: Node, *args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            CTL,
            "-n",
            node.name,
            "-q",
            *args,
            env=self._env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(CTL_TIMEOUT):
            stdout, stderr = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {node.name}: {stderr.decode()}")
        return stdout.decode()

    async def leaders(self, via: Node, queues: list[str]) -> dict[str, str]:
        """The node each of `queues` has its leader on, as the cluster reports it."""
        listing = await self.actl(via, "--no-table-headers", "list_queues", "name", "leader")
        wanted = set(queues)
        found = {}
        for line in listing.splitlines():
            name, _, leader = line.partition("\t")
            if name in wanted:
                found[name] = leader.strip()
        return found

    async def consumers(self, via: Node) -> dict[str, int]:
        """Each queue's consumers on live channels, from `list_consumers`.

        Not `list_queues consumers`: a quorum queue goes on counting the consumers of a
        stopped node (its state machine keeps them as suspected down, waiting for the
        node to come back), so after a node stop that count says 1 for a partition
        nobody consumes, even with every process of the system stopped."""
        listing = await self.actl(via, "--no-table-headers", "list_consumers", "queue_name")
        return dict(Counter(line.strip() for line in listing.splitlines() if line.strip()))

    async def members(self, via: Node, queue: str) -> list[str]:
        """The nodes `queue` (a quorum queue) has a replica on."""
        listing = await self.actl(via, "--no-table-headers", "list_queues", "name", "members")
        for line in listing.splitlines():
            name, _, members = line.partition("\t")
            if name == queue:
                return [m.strip(" []'\"") for m in members.split(",") if m.strip(" []")]
        raise LookupError(queue)

    # --- stopping ---------------------------------------------------------------------

    async def stop_node(self, node: Node) -> None:
        """`rabbitmqctl stop`, as an operator takes a node down; killed if it lingers."""
        with contextlib.suppress(RuntimeError, TimeoutError):
            await self.actl(node, "stop")
        deadline = time.monotonic() + STOP_TIMEOUT
        while self.running(node) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # polling the exit of a process we did not await
        self._kill(node)

    def stop(self) -> None:
        """Stop every node (at the end of the session, at exit, after a failed start)."""
        for node in self.nodes:
            if self.running(node):
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    self.ctl(node, "stop")
        for node in self.nodes:
            self._kill(node)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def _kill(self, node: Node) -> None:
        """Whatever is left of the node's process group (erl_child_setup, a VM that
        ignored the stop) is killed, and the script reaped."""
        if node.process is not None:
            _kill_group(node.process.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.process.wait(timeout=10)
            node.process = None
            self._record_groups()


def sweep() -> int:
    """Kill the nodes of runs whose pytest process is gone, and delete their files.

    A group is killed only if its leader still runs the rabbitmq-server of that run
    (its environment names the run's directory): a reused pid is someone else's."""
    killed = 0
    if not RUNS_ROOT.exists():
        return 0
    for run_dir in RUNS_ROOT.iterdir():
        if _owner_alive(run_dir):
            continue
        groups = run_dir / "groups"
        for line in groups.read_text().split() if groups.exists() else []:
            group = int(line)
            if _belongs_to(group, run_dir):
                _kill_group(group)
                killed += 1
        shutil.rmtree(run_dir, ignore_errors=True)
    return killed


def _owner_alive(run_dir: Path) -> bool:
    try:
        pid, started = (run_dir / "owner").read_text().split()
    except (OSError, ValueError):
        return False
    return _alive(int(pid)) and str(_started_at(int(pid))) == started


def _belongs_to(pid: int, run_dir: Path) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"RABBITMQ_MNESIA_BASE={run_dir}/".encode() in environ


def _started_at(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/pid/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) is not alive.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _kill_group(group: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)
