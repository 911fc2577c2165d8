"""An operator's side of the tests: calls to /api/ with the key, and orders put in place."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from tests.support.credentials import OPERATOR_KEY

Client = TestClient[Any, Any]


def bearer(key: str = OPERATOR_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def move(client: Client, order_id: int, status: str) -> tuple[int, dict[str, Any]]:
    """POST the status; returns the HTTP status and the JSON body."""
    response = await client.post(
        f"/api/orders/{order_id}/status", json={"status": status}, headers=bearer()
    )
    return response.status, await response.json()


async def get_json(client: Client, path: str, **params: str) -> tuple[int, dict[str, Any]]:
    response = await client.get(path, params=params, headers=bearer())
    return response.status, await response.json()


async def insert_order(
    db: asyncpg.Connection,
    *,
    tenant: str,
    client_id: str,
    status: str = "CONFIRMED",
    created_at: datetime | None = None,
    lang: str = "en",
) -> int:
    """An order as the dialog would have placed it, on the test customers' channel."""
    order_id = await db.fetchval(
        """
        INSERT INTO orders (tenant, provider, source_message_id, client_id, client_phone,
                            delivery_address, quantity, status, lang, transport, channel_id,
                            created_at)
        VALUES ($1, 'chat2desk', gen_random_uuid()::text, $2, '+996555123456',
                'Main street 12', 2, $3, $4, 'whatsapp', '4242', COALESCE($5, now()))
        RETURNING id
        """,
        tenant,
        client_id,
        status,
        lang,
        created_at,
    )
    await db.execute(
        "INSERT INTO order_events (order_id, to_status, actor) VALUES ($1, $2, 'dialog')",
        order_id,
        status,
    )
    return int(order_id)


async def history(db: asyncpg.Connection, order_id: int) -> list[tuple[str | None, str, str]]:
    rows = await db.fetch(
        "SELECT from_status, to_status, actor FROM order_events WHERE order_id = $1 ORDER BY id",
        order_id,
    )
    return [(row["from_status"], row["to_status"], row["actor"]) for row in rows]


def is_chain(events: list[tuple[str | None, str, str]]) -> bool:
    """Every event starts where the previous one ended: no gap, no fork."""
    return all(later[0] == earlier[1] for earlier, later in itertools.pairwise(events))
