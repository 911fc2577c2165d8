"""A test run deletes what it made on the shared services, also when it is interrupted.

Everything a run makes carries a namespace of tests.support.queue_sweep (creation time, host
tag, pid of the pytest process): Redis keys under `<namespace>:`, queues under
`<namespace>-`, and the session's databases `orderbot_test_<namespace>`. So a run can
find all of its own data by its pid alone, whichever test made it and whether or not
that test's teardown ran:

- at the end of the session (the `services` fixture's teardown),
- at exit (atexit), when the session's teardown did not get that far,
- on SIGTERM and SIGHUP, which are turned into KeyboardInterrupt so that pytest
  tears the session down as it does on Ctrl-C (SIGINT).

A run killed with SIGKILL can do none of that: the next session starts by deleting
what runs whose creator is gone left behind (`sweep_dead_runs`), as it already did
for queues.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, TypeVar

import asyncpg
from redis.asyncio import Redis

from tests.support.queue_sweep import (
    ABANDONED_AFTER,
    Namespace,
    _process_started_at,
    creator_running,
    delete_queues,
    host_tag,
    list_queues,
    new_namespace,
    parse,
)

DATABASE_PREFIX = "orderbot_test_"
STEP_TIMEOUT = 60.0  # seconds any one cleanup step may take

T = TypeVar("T")


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    # A loop of its own: this runs at exit and from fixtures' teardown alike.
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        return runner.run(asyncio.wait_for(coroutine, STEP_TIMEOUT))


def own_pid() -> int:
    return os.getpid() & 0xFFFFFF


NAMESPACE_LENGTH = len(new_namespace())


def namespace_of(name: str) -> Namespace | None:
    """The namespace a queue (`<namespace>-...`), a Redis key (`<namespace>:...`) or
    a database (`orderbot_test_<namespace>`) belongs to; None for anything else."""
    name = name.removeprefix(DATABASE_PREFIX)
    if len(name) < NAMESPACE_LENGTH or name[NAMESPACE_LENGTH:][:1] not in ("", "-", ":"):
        return None
    return parse(name[:NAMESPACE_LENGTH] + "-")


def made_by_this_process(name: str) -> bool:
    """Does `name` (a queue, a Redis key, a database) belong to a namespace this very
    process made?"""
    namespace = namespace_of(name)
    if namespace is None or namespace.host != host_tag() or namespace.pid != own_pid():
        return False
    started = _process_started_at(os.getpid())
    # The same pid before this process started was another process.
    return started is None or namespace.created_at >= started - 1


def made_by_a_dead_run(name: str, now: float | None = None) -> bool:
    namespace = namespace_of(name)
    if namespace is None:
        return False
    now = time.time() if now is None else now
    return now - namespace.created_at > ABANDONED_AFTER or not creator_running(namespace)


def own_key_pattern() -> str:
    """Redis MATCH pattern of every key under a namespace of this process."""
    return f"t{'?' * 8}{host_tag()}{own_pid():06x}{'?' * 6}:*"


async def delete_keys(redis_url: str, keep: Callable[[str], bool], pattern: str) -> int:
    """Delete the keys matching `pattern` for which `keep(key)` is False."""
    client = Redis.from_url(redis_url, decode_responses=True)
    deleted = 0
    try:
        batch: list[str] = []
        async for key in client.scan_iter(match=pattern, count=1000):
            if not keep(key):
                batch.append(key)
            if len(batch) >= 500:
                deleted += await client.unlink(*batch)
                batch = []
        if batch:
            deleted += await client.unlink(*batch)
    finally:
        await client.aclose()
    return deleted


async def list_test_databases(admin_url: str) -> list[str]:
    connection = await asyncpg.connect(admin_url)
    try:
        rows = await connection.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE $1", DATABASE_PREFIX + "t%"
        )
    finally:
        await connection.close()
    return [row["datname"] for row in rows]


async def drop_databases(admin_url: str, names: list[str]) -> int:
    connection = await asyncpg.connect(admin_url)
    try:
        for name in names:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()
    return len(names)


@dataclass
class Report:
    keys: int = 0
    queues: int = 0
    databases: int = 0
    errors: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = f"{self.keys} Redis keys, {self.queues} queues, {self.databases} databases"
        return text + (f" ({'; '.join(self.errors)})" if self.errors else "")


def _step(report: Report, what: str, action: Callable[[], int]) -> int:
    try:
        return action()
    except Exception as error:  # cleanup goes on with the other services
        report.errors.append(f"{what}: {type(error).__name__}: {error}")
        return 0


def delete_own_data(amqp_url: str, redis_url: str, admin_url: str) -> Report:
    """Delete every key, queue and database of this process's namespaces."""
    report = Report()
    report.keys = _step(
        report,
        "redis",
        lambda: _run(delete_keys(redis_url, lambda key: False, own_key_pattern())),
    )

    def queues() -> int:
        listed = list_queues() or {}
        names = [name for name in listed if made_by_this_process(name)]
        # Ours: deleted even while a consumer of ours (a process being killed) holds on.
        return _run(delete_queues(amqp_url, names, only_unconsumed=False)) if names else 0

    report.queues = _step(report, "rabbitmq", queues)

    def databases() -> int:
        names = [
            name for name in _run(list_test_databases(admin_url)) if made_by_this_process(name)
        ]
        return _run(drop_databases(admin_url, names)) if names else 0

    report.databases = _step(report, "postgres", databases)
    return report


def sweep_dead_runs(redis_url: str, admin_url: str) -> Report:
    """Delete the Redis keys and databases of runs whose creator is gone (the queues
    are swept by tests.queue_sweep.sweep)."""
    report = Report()
    report.keys = _step(
        report,
        "redis",
        lambda: _run(delete_keys(redis_url, lambda key: not made_by_a_dead_run(key), "t*:*")),
    )

    def databases() -> int:
        names = [name for name in _run(list_test_databases(admin_url)) if made_by_a_dead_run(name)]
        return _run(drop_databases(admin_url, names)) if names else 0

    report.databases = _step(report, "postgres", databases)
    return report


class RunCleanup:
    """Deletes this run's data once: at the session's end, or at exit, whichever comes
    first. SIGTERM and SIGHUP become KeyboardInterrupt, so pytest tears down."""

    def __init__(self, amqp_url: str, redis_url: str, admin_url: str) -> None:
        self._urls = (amqp_url, redis_url, admin_url)
        self._lock = threading.Lock()
        self._done = False
        self.report: Report | None = None

    def install(self) -> None:
        atexit.register(self.run)
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGHUP):
                if signal.getsignal(signum) is signal.SIG_DFL:
                    signal.signal(signum, _interrupt)

    def run(self) -> Report | None:
        with self._lock:
            if self._done:
                return self.report
            self._done = True
        self.report = delete_own_data(*self._urls)
        return self.report


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # Once: a second signal gets the default action (the run is stopped at once; the
    # next session's sweep deletes what is left).
    with contextlib.suppress(ValueError):
        signal.signal(signum, signal.SIG_DFL)
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")
