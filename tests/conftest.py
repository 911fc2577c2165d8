"""Fixtures: real services, one database per test session, one namespace per test.

Each test gets its own QUEUE_PREFIX and REDIS_KEY_PREFIX, and client ids nobody
else uses, so tests never see each other's data; the per-session database holds
only this run's orders and is dropped at the end.

ORDERBOT_TEST_PGBOUNCER=1 puts a PgBouncer of the run's own, in transaction pooling
mode, between orderbot and that database: every DATABASE_URL the tests give orderbot
goes through it (with DATABASE_STATEMENT_CACHE_SIZE=0), LISTEN goes direct
(DATABASE_LISTEN_URL), and the tests' own look into the database (`db`) goes direct.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
import asyncpg

# Imported now rather than by hypothesis' pytest plugin at the end of the session: on
# Python 3.11 pytest's assertion rewriter then parses it amid the session's garbage,
# and a collection inside the parse can fail it with "AST constructor recursion depth
# mismatch" (CPython gh-106905), turning a green run red.
import hypothesis  # noqa: F401
import pytest
from aio_pika.abc import AbstractChannel
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from orderbot.amqp.topology import Topology
from orderbot.config.settings import Settings
from orderbot.orders.migrate import migrate
from outbox_worker.service import run_outbox_worker
from server.app import create_app
from server.keys import BROKER
from tests.support.broker_watchdog import BrokerWatchdog
from tests.support.credentials import (
    API_TOKEN,
    OPERATOR_KEY,
    PUBLIC_BASE_URL,
    TWILIO_NUMBER,
    TWILIO_SID,
    TWILIO_TOKEN,
    WEBHOOK_TOKEN,
)
from tests.support.fake_provider import FakeChat2Desk, running_fake
from tests.support.pgbouncer import PgBouncer, running_pgbouncer
from tests.support.processes import OrderbotProcess, wait_http_ok
from tests.support.queue_sweep import new_namespace, sweep
from tests.support.roles import in_process
from tests.support.run_cleanup import DATABASE_PREFIX, RunCleanup, sweep_dead_runs
from tests.support.services import Services, find_services
from worker.service import run_worker

T = TypeVar("T")


def run_apart(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a loop of its own from a sync fixture, leaving the thread's
    current loop alone. asyncio.run() unsets it when done: in a sync fixture set up
    after an async one (pytest orders them by request), the test was left without a
    loop ("There is no current event loop")."""
    # With a loop factory, the runner neither sets nor unsets the current loop.
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        return runner.run(coroutine)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Each test's call report on its item (`item.rep_call`): what lets a fixture's
    teardown know that the test failed (the browsers take a screenshot then)."""
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    """The services, and the promise to delete what this run makes on them: every Redis
    key, queue and database under a namespace of this process, at the session's end,
    at exit, and on SIGTERM/SIGHUP (tests/support/run_cleanup.py)."""
    with find_services() as found:
        admin = found.database_url("postgres")
        cleanup = RunCleanup(found.amqp_url, found.redis_url, admin)
        cleanup.install()
        # First, what test runs that were killed before their teardown left.
        deleted, leftover = sweep(found.amqp_url)
        if leftover:
            print(f"deleted {deleted} of {leftover} queues left by dead test runs")
        dead = sweep_dead_runs(found.redis_url, admin)
        if dead.keys or dead.databases or dead.errors:
            print(f"deleted what dead test runs left: {dead}")
        watchdog = BrokerWatchdog.for_this_run(found.amqp_url)
        try:
            with watchdog or contextlib.nullcontext():
                yield found
        finally:
            report = cleanup.run()
            if report is not None and (report.queues or report.keys or report.errors):
                print(f"\ndeleted what this run left: {report}")


@pytest.fixture(scope="session")
def pgbouncer(services: Services) -> Iterator[PgBouncer | None]:
    """The run's PgBouncer with ORDERBOT_TEST_PGBOUNCER=1, else None."""
    if os.environ.get("ORDERBOT_TEST_PGBOUNCER", "") in ("", "0"):
        yield None
        return
    with running_pgbouncer(services.postgres_url) as bouncer:
        yield bouncer
        report = os.environ.get("ORDERBOT_TEST_PGBOUNCER_REPORT")
        if report:  # how the suite-through-PgBouncer run shows its traffic took that path
            Path(report).write_text(f"{bouncer.transactions()}\n")


@pytest.fixture(scope="session")
def direct_database_url(services: Services) -> Iterator[str]:
    """The session's database, on PostgreSQL itself."""
    # The namespace says which process made it: the run's cleanup finds it by that.
    name = f"{DATABASE_PREFIX}{new_namespace()}"
    url = services.database_url(name)
    run_apart(migrate(url))
    yield url

    async def drop() -> None:
        admin = await asyncpg.connect(services.database_url("postgres"))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    run_apart(drop())


@pytest.fixture(scope="session")
def database_url(direct_database_url: str, pgbouncer: PgBouncer | None) -> str:
    """The session's database as orderbot reaches it: direct, or through the PgBouncer."""
    return direct_database_url if pgbouncer is None else pgbouncer.url(direct_database_url)


@pytest.fixture
def namespace() -> str:
    """Creation time, host and pid are in the name, so a sweep can tell it was left."""
    return new_namespace()


@pytest.fixture
async def fake() -> AsyncIterator[FakeChat2Desk]:
    async with running_fake() as fake:
        yield fake


@pytest.fixture
def config(
    services: Services,
    database_url: str,
    direct_database_url: str,
    pgbouncer: PgBouncer | None,
    namespace: str,
    fake: FakeChat2Desk,
    tmp_path: Path,
) -> dict[str, str]:
    """The environment of this test's orderbot processes; tests adjust it before starting them."""
    through_pgbouncer = (
        {}
        if pgbouncer is None
        else {"DATABASE_LISTEN_URL": direct_database_url, "DATABASE_STATEMENT_CACHE_SIZE": "0"}
    )
    return through_pgbouncer | {
        "AMQP_URL": services.amqp_url,
        "REDIS_URL": services.redis_url,
        "DATABASE_URL": database_url,
        "QUEUE_PREFIX": f"{namespace}-",
        "REDIS_KEY_PREFIX": f"{namespace}:",
        "CHAT2DESK_API_URL": fake.url,
        "CHAT2DESK_API_TOKEN": API_TOKEN,
        "CHAT2DESK_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        "OPERATOR_API_KEY": OPERATOR_KEY,
        "TWILIO_API_URL": fake.url,
        "TWILIO_ACCOUNT_SID": TWILIO_SID,
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "TWILIO_WHATSAPP_FROM": TWILIO_NUMBER,
        "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": "0",
        "METRICS_PORT": "0",
        "SEND_BACKOFF": "10ms",
        "OUTBOX_DELAYS": "50ms,100ms,200ms",
        "SHUTDOWN_TIMEOUT": "10s",
        "LOCK_TIMEOUT": "1s",
        "MESSAGES_PARTITIONS": "4",
        "WORKER_HEARTBEAT": "200ms",
        "CHAT2DESK_RATE_LIMIT": "600000",
        "SPOOL_DIR": str(tmp_path / "spool"),
        "WEBHOOK_RATE_LIMIT_CUSTOMER": "600000",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "info",
    }


@pytest.fixture
def make_settings(config: dict[str, str]) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {k.lower(): v for k, v in config.items()}
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
async def amqp(services: Services, settings: Settings) -> AsyncIterator[AbstractChannel]:
    """A channel for looking into this test's queues; deletes them afterwards."""
    connection = await aio_pika.connect(services.amqp_url)
    channel = await connection.channel()
    yield channel
    cleanup = await connection.channel()
    for name in Topology.from_settings(settings).all_queues:
        await cleanup.queue_delete(name)
    await connection.close()


@pytest.fixture
async def redis(services: Services, namespace: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(services.redis_url, decode_responses=True)
    yield client
    keys = [key async for key in client.scan_iter(match=f"{namespace}:*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def db(direct_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(direct_database_url)
    yield connection
    await connection.close()


@pytest.fixture
async def client(
    settings: Settings, amqp: AbstractChannel, redis: Redis
) -> AsyncIterator[TestClient[Any, Any]]:
    """The webhook server, in this process, connected to the broker."""
    app = create_app(settings)
    async with TestClient(TestServer(app)) as test_client:
        await asyncio.wait_for(app[BROKER].wait_connected(), 30)
        yield test_client


@pytest.fixture
async def worker(
    settings: Settings, amqp: AbstractChannel, redis: Redis
) -> AsyncIterator[asyncio.Task[None]]:
    """A worker running in this process until the test ends."""
    async with in_process(run_worker, settings) as task:
        yield task


@pytest.fixture
async def outbox_worker(
    settings: Settings, amqp: AbstractChannel, redis: Redis
) -> AsyncIterator[asyncio.Task[None]]:
    """An outbox worker running in this process until the test ends."""
    async with in_process(run_outbox_worker, settings) as task:
        yield task


@pytest.fixture
async def spawn(
    config: dict[str, str], tmp_path: Path, amqp: AbstractChannel, redis: Redis
) -> AsyncIterator[Callable[..., Any]]:
    """Start real orderbot processes; every one still running at the end is killed."""
    started: list[OrderbotProcess] = []

    async def start(role: str, *, name: str | None = None, **env: str) -> OrderbotProcess:
        label = name or f"{role}-{len(started)}"
        process = OrderbotProcess(role, {**config, **env}, tmp_path / f"{label}.log", tmp_path)
        started.append(process)
        await process.start()
        return process

    yield start
    for process in started:
        if process.process is not None and process.process.returncode is None:
            process.process.kill()
            await process.process.wait()


@pytest.fixture
def webhook_url() -> Callable[[str], str]:
    def url(base: str) -> str:
        return f"{base}/webhook/chat2desk/{WEBHOOK_TOKEN}"

    return url


__all__ = ["OrderbotProcess", "wait_http_ok"]
