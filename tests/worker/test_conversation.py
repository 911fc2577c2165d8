"""A customer's whole order dialog through server, broker, worker, Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from tests.support.customers import Customer, converse, expected_replies, poster
from tests.support.fake_provider import FakeChat2Desk

CONVERSATION = [
    "Привет",
    "abc",  # too short for an address
    "ул. Ленина 12, кв 5",
    "12345",  # not a phone
    "+996 555 123 456",
    "0",  # out of range
    "3",
    "да",
]


async def test_whole_conversation_creates_exactly_one_order(
    client: TestClient[Any, Any],
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    db: asyncpg.Connection,
    webhook_url: Callable[[str], str],
) -> None:
    customer = Customer()
    await converse(poster(client, webhook_url("")), fake, customer, CONVERSATION)

    rows = await db.fetch("SELECT * FROM orders WHERE client_id = $1", customer.client_id)
    assert len(rows) == 1
    order = rows[0]
    assert order["delivery_address"] == "ул. Ленина 12, кв 5"
    assert order["client_phone"] == "+996555123456"
    assert order["quantity"] == 3
    assert order["chat2desk_client_id"] == customer.client_id
    assert order["provider"] == "chat2desk"
    assert order["status"] == "CONFIRMED"
    events = await db.fetch(
        "SELECT to_status, actor FROM order_events WHERE order_id = $1", order["id"]
    )
    assert [(e["to_status"], e["actor"]) for e in events] == [("CONFIRMED", "dialog")]


async def test_replies_arrive_in_dialog_order_on_the_customers_channel(
    client: TestClient[Any, Any],
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    webhook_url: Callable[[str], str],
) -> None:
    customer = Customer()
    await converse(poster(client, webhook_url("")), fake, customer, CONVERSATION)

    assert fake.texts_for(customer.client_id) == expected_replies(CONVERSATION)
    sent = fake.received[0]
    assert sent.body["type"] == "to_client"
    assert sent.body["transport"] == "whatsapp"
    assert sent.body["channel_id"] == 4242
    assert sent.body["client_id"] == int(customer.client_id)
    assert sent.headers["Authorization"] == "test-api-token-9a7e"
