"""Test namespaces that say who made them, and the sweep of the queues dead runs left.

Every test's queues live under its namespace. A run that is killed (SIGKILL, a CI
timeout, a closed terminal) never reaches its fixtures' teardown, and quorum queues
left behind cost the broker memory and a Raft member each: thousands of them wedged
it once. So each namespace carries its creation time, a tag of the host and the pid
of the pytest process that made it, and every session starts by deleting the queues
of namespaces whose creator is gone.

The broker is shared with other runs, live right now, so a namespace is swept only
when none of its queues has a consumer and either its creator (on this host) is no
longer running, or it is older than ABANDONED_AFTER. A queue's own consumer count
says little (a test's `dlq` and delay tiers never have one), hence the whole
namespace is judged at once. (The delete cannot be `if_unused`: quorum queues do
not support it; a namespace whose creator is gone gets no new consumers anyway.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

import aio_pika

ABANDONED_AFTER = 24 * 3600.0  # seconds; a namespace this old is nobody's live test
SWEEP_BUDGET = 120.0  # seconds a session may spend deleting leftovers
_NAME = re.compile(r"^t(?P<at>[0-9a-f]{8})(?P<host>[0-9a-f]{4})(?P<pid>[0-9a-f]{6})[0-9a-f]{6}-")


def host_tag() -> str:
    return f"{zlib.crc32(socket.gethostname().encode()) & 0xFFFF:04x}"


def new_namespace(now: float | None = None, pid: int | None = None) -> str:
    """`t` + hex of: creation time (8), host tag (4), creator pid (6), random (6)."""
    at = int(time.time() if now is None else now)
    creator = os.getpid() if pid is None else pid
    return f"t{at:08x}{host_tag()}{creator & 0xFFFFFF:06x}{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Namespace:
    prefix: str  # the namespace itself, as it starts every queue name
    created_at: float
    host: str
    pid: int


def parse(queue: str) -> Namespace | None:
    """The namespace a queue name starts with; None for a queue that is no test's."""
    match = _NAME.match(queue)
    if match is None:
        return None
    return Namespace(
        prefix=queue[: match.end() - 1],
        created_at=float(int(match["at"], 16)),
        host=match["host"],
        pid=int(match["pid"], 16),
    )


def _process_started_at(pid: int) -> float | None:
    """Epoch seconds at which process `pid` started; None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except OSError:
        return None
    ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22: starttime, in clock ticks
    return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")


def creator_running(namespace: Namespace) -> bool:
    """Is the process that made `namespace` still running? True when that cannot be
    told (another host), so that nothing of a live run is ever swept."""
    if namespace.host != host_tag():
        return True
    started = _process_started_at(namespace.pid)
    # A process that started after the namespace was made is another one with its pid.
    return started is not None and started <= namespace.created_at + 1


def leftovers(queues: dict[str, int], now: float | None = None) -> list[str]:
    """Of `queues` (name -> consumer count), those of namespaces nobody runs any more."""
    now = time.time() if now is None else now
    by_namespace: dict[Namespace, list[str]] = {}
    for name in queues:
        namespace = parse(name)
        if namespace is not None:
            by_namespace.setdefault(namespace, []).append(name)
    swept: list[str] = []
    for namespace, names in by_namespace.items():
        if any(queues[name] for name in names):
            continue
        if now - namespace.created_at > ABANDONED_AFTER or not creator_running(namespace):
            swept.extend(names)
    return sorted(swept)


def list_queues() -> dict[str, int] | None:
    """Every queue of the local broker with its consumer count; None without rabbitmqctl
    (a broker the suite started in a container is new, with nothing left to sweep)."""
    if shutil.which("rabbitmqctl") is None:
        return None
    try:
        listing = subprocess.run(
            ["rabbitmqctl", "-q", "--no-table-headers", "list_queues", "name", "consumers"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    queues: dict[str, int] = {}
    for line in listing.splitlines():
        name, _, consumers = line.rpartition("\t")
        if name and consumers.isdigit():
            queues[name] = int(consumers)
    return queues


async def delete_queues(
    amqp_url: str,
    names: list[str],
    budget: float = SWEEP_BUDGET,
    *,
    only_unconsumed: bool = True,
) -> int:
    """Delete `names`, a namespace at a time, for at most `budget` seconds, unless the
    broker (asked directly: rabbitmqctl's counts of a quorum queue lag by seconds) says
    a queue of the namespace has a consumer (`only_unconsumed`: a run deleting its own
    queues passes False). Returns how many were deleted."""
    groups: dict[str, list[str]] = {}
    for name in names:
        namespace = parse(name)
        groups.setdefault(namespace.prefix if namespace else name, []).append(name)
    deleted = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        for group in groups.values():
            if loop.time() > deadline:
                break
            consumers = 0
            for name in group:
                try:
                    queue = await channel.declare_queue(name, passive=True)
                except aio_pika.exceptions.ChannelNotFoundEntity:
                    channel = await connection.channel()  # gone already
                    continue
                consumers += queue.declaration_result.consumer_count or 0
            if consumers and only_unconsumed:
                continue
            for name in group:
                await channel.queue_delete(name)
                deleted += 1
    finally:
        with contextlib.suppress(Exception):
            await connection.close()
    return deleted


def sweep(amqp_url: str) -> tuple[int, int]:
    """Delete the queues killed test runs left; (deleted, found)."""
    queues = list_queues()
    if not queues:
        return 0, 0
    names = leftovers(queues)
    if not names:
        return 0, 0
    # Not asyncio.run, which would unset a test's current loop: a runner with a loop
    # factory leaves it alone.
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        return runner.run(delete_queues(amqp_url, names)), len(names)
