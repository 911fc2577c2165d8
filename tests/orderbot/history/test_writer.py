"""The history writer: a step's entries are written before `settle` returns, a database that
is down never holds a step up and loses no entry it still holds, a full queue and a refused
row cost only themselves, and every drop is counted."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from orderbot.events.memory import InMemoryEventBus
from orderbot.history.events import publisher
from orderbot.history.writer import HistoryWriter
from orderbot.runtime import metrics
from tests.support.history import a_tenant, entry, rows_of, wait_rows
from tests.support.tcp_proxy import TcpProxy, running_proxy


def _dropped() -> float:
    return float(metrics.HISTORY_ENTRIES.labels("dropped")._value.get())


@contextlib.asynccontextmanager
async def running(writer: HistoryWriter, pool: asyncpg.Pool) -> AsyncIterator[HistoryWriter]:
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(pool, stop))
    try:
        yield writer
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as created:
        yield created


@pytest.fixture
async def proxied(database_url: str) -> AsyncIterator[tuple[TcpProxy, asyncpg.Pool]]:
    parts = urlsplit(database_url)
    async with running_proxy(parts.port or 5432) as proxy:
        url = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
        async with asyncpg.create_pool(url, min_size=0, max_size=2, timeout=2) as created:
            yield proxy, created


async def test_settle_returns_once_the_steps_entries_are_written(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    tenant = a_tenant()
    async with running(HistoryWriter(), pool) as writer:
        writer.record(entry(tenant, "42", "m1", direction="in", status="received"))
        writer.record(entry(tenant, "42", "m1:0"))
        await writer.settle()
        assert [r["message_key"] for r in await rows_of(db, tenant)] == ["m1", "m1:0"]


async def test_a_step_cancelled_while_settling_leaves_the_others_settling(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    tenant = a_tenant()
    async with running(HistoryWriter(), pool) as writer:
        writer.record(entry(tenant, "42", "m1", direction="in", status="received"))
        cancelled = asyncio.create_task(writer.settle())
        await asyncio.sleep(0)  # it waits on its batch now
        cancelled.cancel()
        writer.record(entry(tenant, "42", "m1:0"))
        async with asyncio.timeout(5):
            await writer.settle()
        assert len(await rows_of(db, tenant)) == 2


async def test_a_step_settling_on_a_stopped_writer_does_not_wait(pool: asyncpg.Pool) -> None:
    writer = HistoryWriter(settle_timeout=30)
    async with running(writer, pool):
        pass
    writer.record(entry(a_tenant(), "42", "m1", direction="in", status="received"))
    async with asyncio.timeout(5):  # not the settle timeout
        await writer.settle()


async def test_a_database_that_is_down_holds_no_step_up_and_gets_the_entries_once_back(
    proxied: tuple[TcpProxy, asyncpg.Pool], db: asyncpg.Connection
) -> None:
    proxy, pool = proxied
    tenant = a_tenant()
    proxy.outage("refuse")
    async with running(HistoryWriter(settle_timeout=0.5), pool) as writer:
        writer.record(entry(tenant, "42", "m1", direction="in", status="received"))
        async with asyncio.timeout(5):  # the settle timeout bounds the first wait
            await writer.settle()
        while writer.healthy:
            await asyncio.sleep(0.01)
        writer.record(entry(tenant, "42", "m1:0"))
        loop = asyncio.get_running_loop()
        started = loop.time()
        await writer.settle()  # failing: no wait at all
        assert loop.time() - started < 0.1
        proxy.restore()
        rows = await wait_rows(db, tenant, lambda rows: len(rows) == 2)
        assert [r["message_key"] for r in rows] == ["m1", "m1:0"]


async def test_a_batch_on_connections_whose_backends_were_terminated_is_written_again(
    direct_database_url: str, db: asyncpg.Connection
) -> None:
    """pg_terminate_backend while the pool's connections are idle: each reads the server's
    FATAL before it sees the connection end, and asyncpg fails the next operation on it with
    InternalClientError ("another operation is in progress"). The writer waits that out on a
    new connection, as any terminated connection; it neither drops the batch nor its rows."""
    parts = urlsplit(direct_database_url)
    tenant = a_tenant()
    before = _dropped()
    async with running_proxy(parts.port or 5432) as proxy:
        url = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
        async with asyncpg.create_pool(url, min_size=2, max_size=2) as pool:
            broken = proxy.upstream_ports()
            proxy.hold_closes = True
            await db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE client_port = ANY($1::int[])",
                broken,
            )
            await proxy.upstream_closed(len(broken))
            proxy.hold_closes = False
            await db.fetchval("SELECT 1")  # a round trip: the pool's sockets are read meanwhile
            async with running(HistoryWriter(), pool) as writer:
                writer.record(entry(tenant, "42", "m1", direction="in", status="received"))
                writer.record(entry(tenant, "42", "m1:0"))
                rows = await wait_rows(db, tenant, lambda rows: len(rows) == 2, timeout=10)
            proxy.cut()  # a broken connection the writer did not need is still held open
    assert [r["message_key"] for r in rows] == ["m1", "m1:0"]
    assert _dropped() == before


async def test_a_full_queue_drops_the_new_entry_and_counts_it() -> None:
    writer = HistoryWriter(capacity=2)
    tenant = a_tenant()
    before = _dropped()
    for n in range(3):
        writer.record(entry(tenant, "42", f"m{n}"))
    assert _dropped() - before == 1


async def test_a_row_the_database_refuses_is_dropped_alone(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    tenant = a_tenant()
    before = _dropped()
    async with running(HistoryWriter(), pool) as writer:
        writer.record(entry(tenant, "42", "m1", direction="in", status="received"))
        writer.record(entry(tenant, "42", "bad", status="lost-in-space"))  # type: ignore[arg-type]
        writer.record(entry(tenant, "42", "m1:0"))
        await writer.settle()
    assert [r["message_key"] for r in await rows_of(db, tenant)] == ["m1", "m1:0"]
    assert _dropped() - before == 1


async def test_history_switched_off_records_nothing(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    tenant = a_tenant()
    async with running(HistoryWriter(enabled=False), pool) as writer:
        writer.record(entry(tenant, "42", "m1", direction="in", status="received"))
        await writer.settle()
    assert await rows_of(db, tenant) == []


async def test_a_written_row_is_told_as_a_message_event_and_its_move_as_a_status_event(
    pool: asyncpg.Pool,
) -> None:
    tenant = a_tenant()
    bus = InMemoryEventBus()
    async with running(HistoryWriter(on_written=publisher(bus)), pool) as writer:
        writer.record(entry(tenant, "42", "m1:0", status="queued"))
        await writer.settle()
        await writer.told()
        writer.record(entry(tenant, "42", "m1:0", status="sent", provider_message_id="9"))
        writer.record(entry(tenant, "42", "m1:0", status="queued"))  # late: no news
        await writer.settle()
        await writer.told()
    message, status = bus.published
    assert (message.kind, message.data["direction"], message.data["status"]) == (
        "message",
        "out",
        "queued",
    )
    assert (status.kind, status.data["status"]) == ("status", "sent")
    assert status.data["message_id"] == message.data["message_id"]
    assert {message.tenant, status.tenant} == {tenant}
