"""Conversation history in PostgreSQL: the batch write, delivery receipts, the operators'
reads and the purge.

A batch is one statement: the conversations are upserted and the messages inserted (or,
when already there, moved on to a later status) from arrays, so a hundred entries cost one
round trip. Every read is scoped to a tenant in SQL; pages are keyset pages by id.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from orderbot.history.models import (
    ConversationPage,
    ConversationView,
    HistoryEntry,
    MessagePage,
    MessageView,
    Written,
)

Connection = asyncpg.Connection | PoolConnectionProxy

# Rows are sorted by conversation so that two writers lock conversations in one order. A
# receipt that came before its reply (delivery_receipts) is taken in the same statement, so
# a batch is one round trip.
_WRITE = """
WITH batch AS (
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
        $8::text[], $9::text[], $10::timestamptz[], $11::text[], $12::timestamptz[], $13::text[]
    ) AS b(tenant, provider, client_id, client_phone, direction, message_key,
           provider_message_id, reply_id, text, at, status, status_at, error)
), receipts AS (
    DELETE FROM delivery_receipts r USING batch b
    WHERE b.direction = 'out' AND r.tenant = b.tenant AND r.provider = b.provider
      AND r.provider_message_id = b.provider_message_id
    RETURNING r.tenant, r.provider, r.provider_message_id, r.status, r.status_at, r.error
), talks AS (
    INSERT INTO conversations AS c (tenant, provider, client_id, client_phone, created_at,
                                    last_message_at)
    SELECT tenant, provider, client_id, max(client_phone), min(at), max(at)
    FROM batch GROUP BY tenant, provider, client_id ORDER BY tenant, provider, client_id
    ON CONFLICT ON CONSTRAINT conversations_client_unique DO UPDATE SET
        last_message_at = greatest(c.last_message_at, EXCLUDED.last_message_at),
        client_phone = coalesce(c.client_phone, EXCLUDED.client_phone)
    RETURNING c.id, c.tenant, c.provider, c.client_id
), rows AS (
    SELECT t.id AS conversation_id, b.tenant, b.provider, b.direction, b.message_key,
           b.provider_message_id, b.reply_id, b.text, b.at,
           (rk.status IS NOT NULL AND orderbot_message_status_rank(rk.status)
                > orderbot_message_status_rank(b.status)) AS receipt_later,
           b.status, b.status_at, b.error,
           rk.status AS receipt_status, rk.status_at AS receipt_at, rk.error AS receipt_error
    FROM batch b JOIN talks t USING (tenant, provider, client_id)
    LEFT JOIN receipts rk ON b.direction = 'out' AND rk.tenant = b.tenant
        AND rk.provider = b.provider AND rk.provider_message_id = b.provider_message_id
)
INSERT INTO messages AS m (conversation_id, tenant, provider, direction, message_key,
                           provider_message_id, reply_id, text, at, status, status_at, error)
SELECT conversation_id, tenant, provider, direction, message_key, provider_message_id,
       reply_id, text, at,
       CASE WHEN receipt_later THEN receipt_status ELSE status END,
       CASE WHEN receipt_later THEN receipt_at ELSE status_at END,
       CASE WHEN receipt_later THEN coalesce(receipt_error, error) ELSE error END
FROM rows
ORDER BY conversation_id, direction, message_key
ON CONFLICT ON CONSTRAINT messages_key_unique DO UPDATE SET
    status = EXCLUDED.status,
    status_at = EXCLUDED.status_at,
    error = coalesce(EXCLUDED.error, m.error),
    provider_message_id = coalesce(m.provider_message_id, EXCLUDED.provider_message_id)
WHERE orderbot_message_status_rank(EXCLUDED.status) > orderbot_message_status_rank(m.status)
   OR (m.provider_message_id IS NULL AND EXCLUDED.provider_message_id IS NOT NULL)
RETURNING m.id, m.conversation_id, m.tenant, m.direction, m.text, m.provider_message_id,
          m.status, (xmax = 0) AS created
"""

# Receipts whose reply has its row by now (it was written while the receipt was being kept):
# applied (forward only) and removed.
_APPLY_RECEIPTS = """
WITH found AS (
    DELETE FROM delivery_receipts r USING messages m
    WHERE m.direction = 'out' AND m.tenant = r.tenant AND m.provider = r.provider
      AND m.provider_message_id = r.provider_message_id
    RETURNING m.id AS message_id, r.status, r.status_at, r.error
)
UPDATE messages m SET status = f.status, status_at = f.status_at,
                      error = coalesce(f.error, m.error)
FROM found f
WHERE m.id = f.message_id
  AND orderbot_message_status_rank(f.status) > orderbot_message_status_rank(m.status)
RETURNING m.id, m.conversation_id, m.tenant, m.direction, m.text, m.provider_message_id,
          m.status, false AS created
"""

_RECEIPT = """
UPDATE messages m SET status = $4, status_at = $5, error = coalesce($6, m.error)
WHERE m.direction = 'out' AND m.tenant = $1 AND m.provider = $2 AND m.provider_message_id = $3
  AND orderbot_message_status_rank($4) > orderbot_message_status_rank(m.status)
RETURNING m.id, m.conversation_id, m.tenant, m.direction, m.text, m.provider_message_id,
          m.status, false AS created
"""
_RECEIPT_KNOWN = """
SELECT 1 FROM messages
WHERE direction = 'out' AND tenant = $1 AND provider = $2 AND provider_message_id = $3
"""
_RECEIPT_KEEP = """
INSERT INTO delivery_receipts AS r (tenant, provider, provider_message_id, status, status_at,
                                    error)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (tenant, provider, provider_message_id) DO UPDATE SET
    status = EXCLUDED.status, status_at = EXCLUDED.status_at,
    error = coalesce(EXCLUDED.error, r.error)
WHERE orderbot_message_status_rank(EXCLUDED.status) > orderbot_message_status_rank(r.status)
"""


def merge(entries: Iterable[HistoryEntry]) -> list[HistoryEntry]:
    """One entry per message (a statement may not touch a row twice), in arrival order."""
    merged: dict[tuple[str, str, str, str, str], HistoryEntry] = {}
    for entry in entries:
        known = merged.get(entry.identity)
        merged[entry.identity] = entry if known is None else known.merged(entry)
    return list(merged.values())


def _written(rows: Iterable[asyncpg.Record]) -> list[Written]:
    return [
        Written(
            tenant=row["tenant"],
            conversation_id=row["conversation_id"],
            message_id=row["id"],
            direction=row["direction"],
            text=row["text"],
            provider_message_id=row["provider_message_id"],
            status=row["status"],
            created=row["created"],
        )
        for row in rows
    ]


async def write(conn: Connection, entries: Sequence[HistoryEntry]) -> list[Written]:
    """Write a batch (merged first); returns the rows created or moved on."""
    batch = merge(entries)
    if not batch:
        return []
    columns: list[list[object]] = [[] for _ in range(13)]
    for e in batch:
        values = (
            e.tenant,
            e.provider,
            e.client_id,
            e.client_phone,
            e.direction,
            e.key,
            e.provider_message_id,
            e.reply_id,
            e.text.replace("\x00", ""),  # PostgreSQL text holds no NUL
            e.at,
            e.status,
            e.status_at,
            e.error,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    return _written(await conn.fetch(_WRITE, *columns))


async def apply_waiting_receipts(pool: asyncpg.Pool) -> list[Written]:
    """Receipts that came before their reply's row and were not applied with it."""
    return _written(await pool.fetch(_APPLY_RECEIPTS))


async def record_receipt(
    pool: asyncpg.Pool,
    *,
    tenant: str,
    provider: str,
    provider_message_id: str,
    status: str,
    at: datetime,
    error: str | None = None,
) -> list[Written]:
    """A provider's delivery status of one of our replies, by the id it gave the send. Kept
    as a receipt when the reply's row is not there yet; a status that is not later than
    the row's changes nothing."""
    args = (tenant, provider, provider_message_id, status, at, error)
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(_RECEIPT, *args)
        if not rows and await conn.fetchval(_RECEIPT_KNOWN, *args[:3]) is None:
            await conn.execute(_RECEIPT_KEEP, *args)
    return _written(rows)


# --- the operators' reads ------------------------------------------------------------------

_CONVERSATIONS = """
SELECT id, provider, client_id, client_phone, created_at, last_message_at
FROM conversations
WHERE tenant = $1 AND id < $2
  AND ($3::text IS NULL OR client_id = $3 OR phone_digits = $4)
ORDER BY id DESC LIMIT $5
"""
_CONVERSATION = """
SELECT id, provider, client_id, client_phone, created_at, last_message_at
FROM conversations WHERE tenant = $1 AND id = $2
"""
_CONVERSATION_OF = """
SELECT id, provider, client_id, client_phone, created_at, last_message_at
FROM conversations WHERE tenant = $1 AND provider = $2 AND client_id = $3
"""
_MESSAGES = """
SELECT id, direction, text, at, status, status_at, provider_message_id, reply_id, error
FROM messages WHERE conversation_id = $1 AND tenant = $2 AND id > $3 ORDER BY id LIMIT $4
"""


def _digits(value: str) -> str | None:
    """A search for a phone number matches however it is written (+996 555-12, 99655512)."""
    if re.search(r"[A-Za-z]", value):
        return None
    digits = re.sub(r"\D", "", value)
    return digits if len(digits) >= 5 else None


async def conversations(
    pool: asyncpg.Pool,
    tenant: str,
    *,
    after: int | None = None,
    limit: int = 50,
    phone_or_client: str | None = None,
) -> ConversationPage:
    """A tenant's conversations, newest first, one keyset page (`after`: the previous
    page's `next_after`); `phone_or_client` matches a client id exactly or a phone by its
    digits."""
    rows = await pool.fetch(
        _CONVERSATIONS,
        tenant,
        after if after is not None else 2**63 - 1,
        phone_or_client or None,
        _digits(phone_or_client) if phone_or_client else None,
        limit + 1,
    )
    items = [ConversationView(**dict(row)) for row in rows[:limit]]
    return ConversationPage(
        items=items, next_after=items[-1].id if len(rows) > limit and items else None
    )


async def conversation(
    pool: asyncpg.Pool, tenant: str, conversation_id: int
) -> ConversationView | None:
    row = await pool.fetchrow(_CONVERSATION, tenant, conversation_id)
    return None if row is None else ConversationView(**dict(row))


async def messages(
    pool: asyncpg.Pool,
    tenant: str,
    conversation_id: int,
    *,
    after: int | None = None,
    limit: int = 100,
) -> MessagePage | None:
    """A conversation's messages, oldest first, one keyset page; None when the tenant has
    no such conversation."""
    found = await conversation(pool, tenant, conversation_id)
    if found is None:
        return None
    rows = await pool.fetch(_MESSAGES, conversation_id, tenant, after or 0, limit + 1)
    items = [MessageView(**dict(row)) for row in rows[:limit]]
    return MessagePage(
        conversation=found,
        items=items,
        next_after=items[-1].id if len(rows) > limit and items else None,
    )


async def conversation_of(
    pool: asyncpg.Pool, tenant: str, provider: str, client_id: str
) -> ConversationView | None:
    """A customer's conversation, for the console's order detail."""
    row = await pool.fetchrow(_CONVERSATION_OF, tenant, provider, client_id)
    return None if row is None else ConversationView(**dict(row))


# --- retention -----------------------------------------------------------------------------

PURGE_BATCH = 5000


async def purge(pool: asyncpg.Pool, older_than: timedelta) -> tuple[int, int]:
    """Delete messages older than the retention and the conversations left without any, in
    batches so a first purge of a large table never holds long locks. Returns (messages,
    conversations) deleted."""
    messages_deleted = 0
    while True:
        status = await pool.execute(
            "DELETE FROM messages WHERE id IN (SELECT id FROM messages "
            "WHERE at < now() - $1::interval LIMIT $2)",
            older_than,
            PURGE_BATCH,
        )
        count = int(status.split()[-1])
        messages_deleted += count
        if count < PURGE_BATCH:
            break
    status = await pool.execute(
        "DELETE FROM conversations c WHERE c.last_message_at < now() - $1::interval "
        "AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id)",
        older_than,
    )
    await pool.execute(
        "DELETE FROM delivery_receipts WHERE status_at < now() - $1::interval",
        min(older_than, timedelta(days=1)),
    )
    return messages_deleted, int(status.split()[-1])
