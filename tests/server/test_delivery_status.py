"""Delivery statuses from the providers: Twilio's signed status callbacks at
`/webhook/twilio/status` and Chat2Desk's `outbox_status` events move a reply's history
row forward, never back, and only the signed tenant's."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from orderbot.config.settings import Settings
from orderbot.history import store
from server.app import create_app
from tests.support.credentials import TWILIO_TOKEN
from tests.support.customers import Customer, poster
from tests.support.fake_provider import FakeChat2Desk
from tests.support.history import entry, rows_of, wait_rows
from tests.support.tcp_proxy import running_proxy
from tests.support.twilio import WhatsAppCustomer, post, post_status, status_callback

Client = TestClient[Any, Any]


@pytest.fixture
def config(config: dict[str, str], namespace: str) -> dict[str, str]:
    """A tenant of this test's own, so the history it reads holds only its own rows."""
    return {**config, "TENANT": f"tenant-{namespace}"}


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as created:
        yield created


async def _reply(pool: asyncpg.Pool, settings: Settings, provider: str, sent_id: str) -> None:
    client_id = "whatsapp:+996555000111" if provider == "twilio" else "42"
    async with pool.acquire() as conn:
        await store.write(
            conn,
            [
                entry(
                    settings.tenant,
                    client_id,
                    "m1:0",
                    provider=provider,
                    provider_message_id=sent_id,
                )
            ],
        )


SID = "SM" + "ab" * 16


async def test_a_status_callback_with_a_bad_signature_is_403_and_changes_nothing(
    client: Client, pool: asyncpg.Pool, db: asyncpg.Connection, settings: Settings
) -> None:
    await _reply(pool, settings, "twilio", SID)
    form = status_callback(SID, "delivered", to="whatsapp:+996555000111")
    response = await post_status(client, form, token=TWILIO_TOKEN + "x")
    assert response.status == 403
    assert (await rows_of(db, settings.tenant))[0]["status"] == "sent"


async def test_a_status_callback_signed_for_the_inbound_url_is_403(
    client: Client, pool: asyncpg.Pool, settings: Settings
) -> None:
    await _reply(pool, settings, "twilio", SID)
    form = status_callback(SID, "delivered", to="whatsapp:+996555000111")
    from tests.support.twilio import URL

    assert (await post_status(client, form, url=URL)).status == 403


async def test_delivered_then_read_move_the_reply_and_a_late_sent_does_not_undo_them(
    client: Client, pool: asyncpg.Pool, db: asyncpg.Connection, settings: Settings
) -> None:
    await _reply(pool, settings, "twilio", SID)
    for status in ("delivered", "read", "sent"):
        form = status_callback(SID, status, to="whatsapp:+996555000111")
        assert (await post_status(client, form)).status == 204
    assert (await rows_of(db, settings.tenant))[0]["status"] == "read"


async def test_an_undelivered_reply_keeps_twilios_error_code(
    client: Client, pool: asyncpg.Pool, db: asyncpg.Connection, settings: Settings
) -> None:
    await _reply(pool, settings, "twilio", SID)
    form = status_callback(SID, "undelivered", to="whatsapp:+996555000111", error_code="63016")
    assert (await post_status(client, form)).status == 204
    (row,) = await rows_of(db, settings.tenant)
    assert (row["status"], row["error"]) == ("undelivered", "twilio error 63016")


async def test_a_chat2desk_outbox_status_error_marks_the_reply_undelivered(
    client: Client,
    pool: asyncpg.Pool,
    db: asyncpg.Connection,
    settings: Settings,
    webhook_url: Any,
) -> None:
    await _reply(pool, settings, "chat2desk", "106773577")
    event = {
        "hook_type": "outbox_status",
        "message_id": 106773577,
        "client_id": 42,
        "error": "WhatsApp: the client has no WhatsApp account",
    }
    response = await client.post(webhook_url(""), json=event)
    assert response.status == 200
    assert await response.json() == {"status": "recorded"}
    (row,) = await rows_of(db, settings.tenant)
    assert (row["status"], row["error"]) == (
        "undelivered",
        "WhatsApp: the client has no WhatsApp account",
    )


async def test_a_chat2desk_outbox_status_without_a_status_or_error_is_ignored(
    client: Client, webhook_url: Any
) -> None:
    event = {"hook_type": "outbox_status", "message_id": 5, "client_id": 42}
    response = await client.post(webhook_url(""), json=event)
    assert (response.status, await response.json()) == (200, {"status": "ignored"})


async def test_a_whatsapp_reply_is_sent_with_its_status_callback_and_its_callback_reaches_it(
    client: Client,
    worker: Any,
    fake: FakeChat2Desk,
    db: asyncpg.Connection,
    settings: Settings,
) -> None:
    customer = WhatsAppCustomer()
    assert (await post(client, customer.says("Привет"))).status == 200
    await fake.wait_received(1)
    (sent,) = fake.received
    assert sent.body["StatusCallback"] == "https://bot.example.com/webhook/twilio/status"
    (listed,) = [m for m in fake.twilio_messages if m["to"] == customer.number]
    await wait_rows(db, settings.tenant, lambda rows: any(r["direction"] == "out" for r in rows))
    form = status_callback(listed["sid"], "delivered", to=customer.number)
    assert (await post_status(client, form)).status == 204
    rows = await rows_of(db, settings.tenant)
    assert [(r["direction"], r["status"]) for r in rows][:2] == [
        ("in", "received"),
        ("out", "delivered"),
    ]


async def test_a_chat2desk_customers_dialog_is_in_the_history_with_the_ids_chat2desk_gave(
    client: Client,
    worker: Any,
    fake: FakeChat2Desk,
    db: asyncpg.Connection,
    settings: Settings,
    webhook_url: Any,
) -> None:
    customer = Customer()
    send = poster(client, webhook_url(""))
    assert await send(customer.says("Привет", message_id="c-1")) == 200
    await fake.wait_received(1)
    rows = await wait_rows(db, settings.tenant, lambda rows: len(rows) >= 2)
    (sent_id,) = fake.sent_ids_for(customer.client_id)
    assert [(r["direction"], r["message_key"], r["status"]) for r in rows] == [
        ("in", "c-1", "received"),
        ("out", "c-1:0", "sent"),
    ]
    assert rows[1]["provider_message_id"] == str(sent_id)


async def test_a_status_that_cannot_be_written_is_503_so_the_provider_may_retry(
    make_settings: Callable[..., Settings], database_url: str, amqp: Any, redis: Any
) -> None:
    parts = urlsplit(database_url)
    async with running_proxy(parts.port or 5432) as proxy:
        url = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
        app = create_app(make_settings(database_url=url))
        async with TestClient(TestServer(app)) as server:
            proxy.outage("refuse")
            form = status_callback(SID, "delivered", to="whatsapp:+996555000111")
            response = await post_status(server, form)
            assert response.status == 503
            assert response.headers["Retry-After"] == "30"
            assert (await response.json())["error"] == "history unavailable, retry later"
