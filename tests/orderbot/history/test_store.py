"""The history store against PostgreSQL: one row per message however often it is written,
statuses that only move forward, receipts that come before their reply, keyset pages, and
tenants that never see each other's conversations."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from orderbot.cli.history import run_history
from orderbot.config.settings import Settings
from orderbot.history import store
from orderbot.history.models import MessageStatus
from tests.support.history import a_tenant, entry, receipt, rows_of, write


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as created:
        yield created


async def test_a_message_written_twice_is_one_row(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    tenant = a_tenant()
    first = entry(tenant, "42", "m1", direction="in", status="received", text="Привет")
    await write(pool, first)
    again = await write(pool, first)
    assert again == []  # nothing changed: no event either
    assert [(r["direction"], r["message_key"], r["text"]) for r in await rows_of(db, tenant)] == [
        ("in", "m1", "Привет")
    ]


async def test_one_batch_holding_the_same_reply_twice_keeps_the_later_status(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    tenant = a_tenant()
    await write(
        pool,
        entry(tenant, "42", "m1:0", status="queued"),
        entry(tenant, "42", "m1:0", status="sent", provider_message_id="900"),
    )
    (row,) = await rows_of(db, tenant)
    assert (row["status"], row["provider_message_id"]) == ("sent", "900")


@pytest.mark.parametrize(
    ("first", "late"),
    [("delivered", "sent"), ("sent", "queued"), ("read", "delivered"), ("sent", "failed")],
)
async def test_a_status_never_goes_backwards(
    pool: asyncpg.Pool, db: asyncpg.Connection, first: MessageStatus, late: MessageStatus
) -> None:
    tenant = a_tenant()
    await write(pool, entry(tenant, "42", "m1:0", status=first))
    assert await write(pool, entry(tenant, "42", "m1:0", status=late)) == []
    (row,) = await rows_of(db, tenant)
    assert row["status"] == first


async def test_a_provider_status_moves_the_reply_it_names(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    tenant = a_tenant()
    await write(pool, entry(tenant, "42", "m1:0", provider_message_id="900"))
    changed = await receipt(pool, tenant, "900", "delivered")
    assert [(w.status, w.created) for w in changed] == [("delivered", False)]
    stale = await receipt(pool, tenant, "900", "sent")
    assert stale == []
    assert (await rows_of(db, tenant))[0]["status"] == "delivered"


async def test_a_status_that_comes_before_its_reply_is_applied_when_the_reply_is_written(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    tenant = a_tenant()
    kept = await receipt(pool, tenant, "SM1", "read", provider="twilio")
    assert kept == []
    await write(
        pool, entry(tenant, "whatsapp:+1", "m1:0", provider="twilio", provider_message_id="SM1")
    )
    (row,) = await rows_of(db, tenant)
    assert row["status"] == "read"
    assert (
        await db.fetchval("SELECT count(*) FROM delivery_receipts WHERE tenant = $1", tenant) == 0
    )


async def test_another_tenants_reply_is_not_moved_by_a_status(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    ours, theirs = a_tenant(), a_tenant()
    await write(pool, entry(theirs, "42", "m1:0", provider_message_id="900"))
    await receipt(pool, ours, "900", "delivered")
    assert (await rows_of(db, theirs))[0]["status"] == "sent"


async def test_conversations_page_by_keyset_newest_first(pool: asyncpg.Pool) -> None:
    tenant = a_tenant()
    for n in range(5):
        await write(pool, entry(tenant, f"client-{n}", f"m{n}", direction="in", status="received"))
    first = await store.conversations(pool, tenant, limit=2)
    second = await store.conversations(pool, tenant, limit=2, after=first.next_after)
    third = await store.conversations(pool, tenant, limit=2, after=second.next_after)
    seen = [c.client_id for page in (first, second, third) for c in page.items]
    assert seen == [f"client-{n}" for n in (4, 3, 2, 1, 0)]
    assert third.next_after is None


async def test_messages_page_by_keyset_oldest_first(pool: asyncpg.Pool) -> None:
    tenant = a_tenant()
    await write(pool, *(entry(tenant, "42", f"m{n}", direction="in") for n in range(5)))
    (talk,) = (await store.conversations(pool, tenant)).items
    first = await store.messages(pool, tenant, talk.id, limit=3)
    assert first is not None
    assert first.next_after is not None
    rest = await store.messages(pool, tenant, talk.id, after=first.next_after, limit=3)
    assert rest is not None
    assert rest.next_after is None
    keys = [m.reply_id for m in [*first.items, *rest.items]]
    assert keys == [None] * 5  # inbound messages have no reply id
    assert [m.text for m in [*first.items, *rest.items]] == ["hello"] * 5
    assert len({m.id for m in [*first.items, *rest.items]}) == 5


async def test_a_search_finds_a_customer_by_client_id_or_phone_digits(pool: asyncpg.Pool) -> None:
    tenant = a_tenant()
    await write(
        pool,
        entry(tenant, "whatsapp:+996555123456", "a", direction="in", client_phone="+996555123456"),
        entry(tenant, "777", "b", direction="in", client_phone="+996 700 111-222"),
        entry(tenant, "888", "c", direction="in"),
    )
    by_phone = await store.conversations(pool, tenant, phone_or_client="996700111222")
    by_client = await store.conversations(pool, tenant, phone_or_client="888")
    by_number = await store.conversations(pool, tenant, phone_or_client="+996 555 123 456")
    assert [c.client_id for c in by_phone.items] == ["777"]
    assert [c.client_id for c in by_client.items] == ["888"]
    assert [c.client_id for c in by_number.items] == ["whatsapp:+996555123456"]


async def test_a_tenant_never_reads_another_tenants_conversation(pool: asyncpg.Pool) -> None:
    ours, theirs = a_tenant(), a_tenant()
    await write(pool, entry(theirs, "42", "m1", direction="in"))
    (their_talk,) = (await store.conversations(pool, theirs)).items
    assert (await store.conversations(pool, ours)).items == []
    assert await store.messages(pool, ours, their_talk.id) is None


async def test_a_batch_moves_its_conversation_on_without_touching_an_index(
    pool: asyncpg.Pool,
) -> None:
    """Every batch moves its conversations' last_message_at; that update is heap-only (no
    new entry in any index) as long as no index covers a column it changes."""
    tenant = a_tenant()
    await write(pool, entry(tenant, "42", "m1", direction="in"))
    async with pool.acquire() as conn, conn.transaction():
        await store.write(conn, [entry(tenant, "42", "m2", direction="in")])
        counts = await conn.fetchrow(
            "SELECT pg_stat_get_xact_tuples_updated('conversations'::regclass),"
            " pg_stat_get_xact_tuples_hot_updated('conversations'::regclass)"
        )
    assert counts is not None
    assert tuple(counts) == (1, 1)


async def test_purge_deletes_what_is_older_than_the_retention(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    tenant = a_tenant()
    old = datetime.now(UTC) - timedelta(days=100)
    await write(
        pool,
        entry(tenant, "gone", "old", direction="in", at=old),
        entry(tenant, "kept", "old2", direction="in", at=old),
        entry(tenant, "kept", "new", direction="in"),
    )
    await store.purge(pool, timedelta(days=90))
    assert [(r["client_id"], r["message_key"]) for r in await rows_of(db, tenant)] == [
        ("kept", "new")
    ]
    clients = await db.fetch("SELECT client_id FROM conversations WHERE tenant = $1", tenant)
    assert [r["client_id"] for r in clients] == ["kept"]


async def test_orderbot_history_purge_deletes_what_is_older_than_asked(
    pool: asyncpg.Pool, db: asyncpg.Connection, settings: Settings
) -> None:
    tenant = a_tenant()
    old = datetime.now(UTC) - timedelta(days=40)
    await write(pool, entry(tenant, "42", "old", direction="in", at=old))
    await write(pool, entry(tenant, "42", "new", direction="in"))
    args = argparse.Namespace(older_than="30d")
    assert await run_history(settings, args) == 0
    assert [r["message_key"] for r in await rows_of(db, tenant)] == ["new"]
