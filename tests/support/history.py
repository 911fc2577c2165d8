"""Conversation history for tests: entries to write, and the rows as PostgreSQL has them."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from orderbot.history import store
from orderbot.history.models import Direction, HistoryEntry, MessageStatus, Written


def a_tenant() -> str:
    """A tenant of this test alone: the per-session database is shared by the tests."""
    return f"t-{uuid.uuid4().hex[:12]}"


def entry(
    tenant: str,
    client_id: str,
    key: str,
    *,
    direction: Direction = "out",
    status: MessageStatus = "sent",
    text: str = "hello",
    provider: str = "chat2desk",
    provider_message_id: str | None = None,
    client_phone: str | None = None,
    at: datetime | None = None,
) -> HistoryEntry:
    now = at or datetime.now(UTC)
    return HistoryEntry(
        tenant=tenant,
        provider=provider,
        client_id=client_id,
        direction=direction,
        key=key,
        text=text,
        at=now,
        status=status,
        status_at=datetime.now(UTC),
        client_phone=client_phone,
        provider_message_id=provider_message_id,
        reply_id=key if direction == "out" else None,
    )


async def write(pool: asyncpg.Pool, *entries: HistoryEntry) -> list[Written]:
    """One batch, as the history writer writes it."""
    async with pool.acquire() as conn:
        return await store.write(conn, entries)


async def receipt(
    pool: asyncpg.Pool,
    tenant: str,
    provider_message_id: str,
    status: MessageStatus,
    *,
    provider: str = "chat2desk",
) -> list[Written]:
    """The provider's delivery status of the reply it knows by `provider_message_id`, now."""
    return await store.record_receipt(
        pool,
        tenant=tenant,
        provider=provider,
        provider_message_id=provider_message_id,
        status=status,
        at=datetime.now(UTC),
    )


async def rows_of(db: asyncpg.Connection, tenant: str) -> list[dict[str, Any]]:
    """Every message row of the tenant, oldest first, with its conversation's client."""
    rows = await db.fetch(
        "SELECT c.provider, c.client_id, m.direction, m.message_key, m.provider_message_id,"
        " m.text, m.status, m.error FROM messages m JOIN conversations c"
        " ON c.id = m.conversation_id WHERE m.tenant = $1 ORDER BY m.id",
        tenant,
    )
    return [dict(row) for row in rows]


async def wait_rows(
    db: asyncpg.Connection,
    tenant: str,
    done: Callable[[list[dict[str, Any]]], bool],
    *,
    timeout: float = 30,
    poll: Callable[[], Awaitable[None]] | None = None,
) -> list[dict[str, Any]]:
    """The tenant's rows once `done` holds for them (polled: the writer runs in a process of
    its own); the last rows seen are in the AssertionError otherwise."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        rows = await rows_of(db, tenant)
        if done(rows):
            return rows
        if loop.time() > deadline:
            raise AssertionError(f"history never got there: {rows}")
        if poll is not None:
            await poll()
        await asyncio.sleep(0.05)
