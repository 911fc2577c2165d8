"""A test run deletes what it made on the shared services: Redis keys, queues and
databases under its namespaces, when it finishes and when it is interrupted
(tests/support/run_cleanup.py). Checked by running a small pytest session of its own."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest
from aio_pika.abc import AbstractChannel
from redis.asyncio import Redis

from tests.support.queue_sweep import host_tag, list_queues, new_namespace
from tests.support.run_cleanup import (
    DATABASE_PREFIX,
    list_test_databases,
    made_by_this_process,
    namespace_of,
    own_key_pattern,
    sweep_dead_runs,
)
from tests.support.services import Services

REPO = Path(__file__).resolve().parents[2]
PROBE = "ORDERBOT_CLEANUP_PROBE"
MARKER = "ORDERBOT_CLEANUP_MARKER"


@pytest.mark.skipif(
    PROBE not in os.environ, reason="run by the tests below, in a session of its own"
)
async def test_probe_makes_data_only_the_run_cleanup_deletes(
    amqp: AbstractChannel, redis: Redis, database_url: str
) -> None:
    # A namespace of this process that no fixture knows: only the run's cleanup finds it.
    other = new_namespace()
    await redis.set(f"{other}:probe", "1", ex=7 * 24 * 3600)
    await amqp.declare_queue(f"{other}-probe", durable=True, arguments={"x-queue-type": "quorum"})
    made = {"namespace": other, "database": database_url.rsplit("/", 1)[1]}
    await asyncio.to_thread(Path(os.environ[MARKER]).write_text, json.dumps(made))
    if os.environ[PROBE] == "hang":
        await asyncio.sleep(120)


def run_probe(
    tmp_path: Path, mode: str, *, interrupt: signal.Signals | None = None
) -> dict[str, object]:
    marker = tmp_path / "made.json"
    env = {**os.environ, PROBE: mode, MARKER: str(marker)}
    probe = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"{Path(__file__).relative_to(REPO)}::test_probe_makes_data_only_the_run_cleanup_deletes",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        if interrupt is not None:
            deadline = time.monotonic() + 120
            while not marker.exists() and probe.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert marker.exists(), probe.communicate(timeout=60)[0]
            time.sleep(0.3)  # into the sleep
            probe.send_signal(interrupt)
        output, _ = probe.communicate(timeout=180)
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait()
    made = json.loads(marker.read_text())
    return {"pid": probe.pid, "returncode": probe.returncode, "output": output, **made}


def pattern_of(pid: int) -> str:
    return own_key_pattern().replace(f"{os.getpid() & 0xFFFFFF:06x}", f"{pid & 0xFFFFFF:06x}")


async def left_by(services: Services, pid: int) -> dict[str, list[str]]:
    client = Redis.from_url(services.redis_url, decode_responses=True)
    try:
        keys = [key async for key in client.scan_iter(match=pattern_of(pid), count=1000)]
    finally:
        await client.aclose()

    def theirs(name: str) -> bool:
        namespace = namespace_of(name)
        return namespace is not None and namespace.host == host_tag() and namespace.pid == pid

    queues = [name for name in (list_queues() or {}) if theirs(name)]
    databases = [
        name
        for name in await list_test_databases(services.database_url("postgres"))
        if theirs(name)
    ]
    return {"keys": keys, "queues": queues, "databases": databases}


async def test_a_finished_run_leaves_no_keys_queues_or_database(
    services: Services, tmp_path: Path
) -> None:
    probe = await asyncio.to_thread(run_probe, tmp_path, "finish")

    assert probe["returncode"] == 0, probe["output"]
    assert await left_by(services, int(str(probe["pid"]))) == {
        "keys": [],
        "queues": [],
        "databases": [],
    }


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_an_interrupted_run_deletes_what_it_made(
    services: Services, tmp_path: Path, signum: signal.Signals
) -> None:
    probe = await asyncio.to_thread(run_probe, tmp_path, "hang", interrupt=signum)

    assert probe["returncode"] != 0, probe["output"]  # it did not finish
    assert await left_by(services, int(str(probe["pid"]))) == {
        "keys": [],
        "queues": [],
        "databases": [],
    }, probe["output"]


def dead_pid() -> int:
    finished = subprocess.Popen(["true"])
    finished.wait()
    return finished.pid


async def test_a_session_deletes_the_keys_and_databases_of_killed_runs(
    services: Services, redis: Redis, namespace: str
) -> None:
    dead = new_namespace(now=time.time() - 5, pid=dead_pid())
    database = f"{DATABASE_PREFIX}{dead}"
    admin = await asyncpg.connect(services.database_url("postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
        await redis.set(f"{dead}:dialog", "1")
        await redis.set(f"{namespace}:dialog", "1")  # this live run's

        report = await asyncio.to_thread(
            sweep_dead_runs, services.redis_url, services.database_url("postgres")
        )

        assert report.errors == []
        assert await redis.exists(f"{dead}:dialog") == 0
        assert await redis.exists(f"{namespace}:dialog") == 1
        assert not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}"')
        await admin.close()


def test_names_of_this_run_are_told_from_others() -> None:
    # The services are shared: the cleanup must take only this process's namespaces.
    mine = new_namespace()
    someone_else = new_namespace(pid=os.getpid() + 1)
    earlier_holder_of_my_pid = new_namespace(now=time.time() - 10**6)

    assert made_by_this_process(f"{mine}-messages")
    assert not made_by_this_process(f"{someone_else}-messages")
    assert not made_by_this_process(f"{earlier_holder_of_my_pid}-messages")
    assert not made_by_this_process("messages")
    assert made_by_this_process(f"{mine}:dialog:default:chat2desk:42")
    assert made_by_this_process(f"{DATABASE_PREFIX}{mine}")
    assert not made_by_this_process(f"{mine}x:dialog")
