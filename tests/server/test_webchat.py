"""The web chat channel at the HTTP edge: its page and cookie, the refusals of bad
posts, and a customer's whole order through it with a real worker and outbox."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from aio_pika.abc import AbstractChannel
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from dialog import Lang, OrderStatus, status_notice
from orderbot.config.settings import Settings
from orderbot.envelopes import InboundMessage, decode
from server.app import create_app
from server.keys import BROKER
from server.webchat_cookie import sign
from tests.support.broker_tools import messages_queues, take_all, wait_depth
from tests.support.credentials import OPERATOR_KEY, WEBCHAT_SECRET
from tests.support.customers import HAPPY_PATH_RU, expected_replies
from tests.support.recovery import poll
from tests.support.sse import SseEvent
from tests.support.tcp_proxy import running_proxy
from tests.support.webchat import COOKIE, ChatCustomer, opened, place_order, replies_until

Client = TestClient[Any, Any]


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(webchat_secret=WEBCHAT_SECRET)


def _replies(events: list[SseEvent]) -> list[str]:
    return [e.data["text"] for e in events if e.data["direction"] == "out"]


async def test_the_page_sets_a_signed_httponly_strict_cookie_for_its_tenant(
    client: Client,
) -> None:
    response = await client.get("/chat")
    morsel = response.cookies[COOKIE]
    assert response.status == 200
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Strict"
    assert morsel["path"] == "/chat/default"
    session, _, mac = morsel.value.partition(".")
    assert morsel.value == sign(WEBCHAT_SECRET, "default", session)
    assert mac


async def test_the_page_carries_the_test_ids_and_only_its_own_assets(client: Client) -> None:
    page = await ChatCustomer(client).open()
    for test_id in ("chat-input", "chat-send", "chat-log"):
        assert f'data-testid="{test_id}"' in page
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources
    assert all(s.startswith("/chat/-/") for s in sources)
    assert not re.search(r"https?://", page)
    for source in sources:
        asset = await client.get(source)
        assert asset.status == 200
        assert not re.search(r"https?://", await asset.text())


async def test_a_page_reloaded_with_its_cookie_keeps_the_session(client: Client) -> None:
    customer = await opened(client)
    again = await client.get("/chat/default", headers=customer.headers())
    assert COOKIE not in again.cookies


async def test_a_post_without_the_cookie_is_401(client: Client) -> None:
    response = await client.post("/chat/default/messages", json={"id": "abcdefgh1", "text": "hi"})
    body = await response.json()
    assert (response.status, body["error"]) == (401, "missing chat session")


async def test_a_post_with_a_forged_cookie_is_403(client: Client) -> None:
    forged = sign("not-the-secret-at-all", "default", "A" * 22)
    response = await client.post(
        "/chat/default/messages",
        json={"id": "abcdefgh1", "text": "hi"},
        headers={"Cookie": f"{COOKIE}={forged}"},
    )
    assert (response.status, (await response.json())["error"]) == (403, "invalid chat session")


async def test_an_unknown_tenant_is_404(client: Client) -> None:
    for response in (
        await client.get("/chat/nobody-here"),
        await client.post("/chat/nobody-here/messages", json={"id": "abcdefgh1", "text": "x"}),
        await client.get("/chat/nobody-here/events"),
    ):
        assert (response.status, (await response.json())["error"]) == (404, "unknown tenant")


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"not json", "application/json", 400),
        (b'["a list"]', "application/json", 422),
        (b'{"text": "no id"}', "application/json", 422),
        (b'{"id": "short", "text": "hi"}', "application/json", 422),
        (b'{"id": "abcdefgh1", "text": "   "}', "application/json", 422),
        (b'{"id": "abcdefgh1", "text": 5}', "application/json", 422),
        (b"id=abcdefgh1&text=hi", "application/x-www-form-urlencoded", 415),
    ],
)
async def test_a_bad_post_gets_a_clear_4xx(
    client: Client, body: bytes, content_type: str, status: int
) -> None:
    customer = await opened(client)
    response = await customer.post(body, content_type)
    assert response.status == status
    assert "error" in await response.json()


async def test_a_message_over_the_limit_is_413(client: Client, settings: Settings) -> None:
    customer = await opened(client)
    response = await client.post(
        "/chat/default/messages",
        json={"id": "abcdefgh1", "text": "x" * (settings.webchat_max_text + 1)},
        headers=customer.headers(),
    )
    assert (response.status, (await response.json())["error"]) == (413, "message too long")


async def test_a_body_over_the_server_limit_is_413(client: Client, settings: Settings) -> None:
    customer = await opened(client)
    body = b'{"id": "abcdefgh1", "text": "' + b"x" * settings.http_max_body + b'"}'
    response = await customer.post(body, "application/json")
    assert response.status == 413
    assert "error" in await response.json()


async def test_the_events_stream_needs_the_cookie(client: Client) -> None:
    response = await client.get("/chat/default/events")
    assert response.status == 401
    customer = await opened(client)
    bad = await client.get(
        "/chat/default/events", headers={**customer.headers(), "Last-Event-ID": "x; drop"}
    )
    assert bad.status == 400


async def test_the_chat_is_off_without_its_secret(
    make_settings: Callable[..., Settings], amqp: AbstractChannel, redis: Redis
) -> None:
    app = create_app(make_settings(webchat_secret=None))
    async with TestClient(TestServer(app)) as off:
        response = await off.get("/chat")
        assert (response.status, (await response.json())["error"]) == (404, "the web chat is off")


async def test_a_customer_orders_through_the_web_chat_and_reads_the_replies_live(
    client: Client,
    worker: asyncio.Task[None],
    outbox_worker: asyncio.Task[None],
    db: asyncpg.Connection,
) -> None:
    customer = await opened(client)
    async with customer.events() as stream:
        replies = await place_order(customer, stream)
    assert replies == expected_replies(HAPPY_PATH_RU, own_phone=None)
    row = await db.fetchrow(
        "SELECT provider, client_id, client_phone, quantity, status FROM orders "
        "WHERE client_id = $1",
        customer.session,
    )
    assert row is not None
    assert dict(row) == {
        "provider": "webchat",
        "client_id": customer.session,
        "client_phone": "+996555123456",
        "quantity": 3,
        "status": "CONFIRMED",
    }


async def test_a_reloaded_page_reads_the_whole_conversation_in_order(
    client: Client, worker: asyncio.Task[None]
) -> None:
    customer = await opened(client)
    await customer.say("Здравствуйте", message_id="first-message")
    async with customer.events() as stream:
        seen = await stream.until(lambda e: e.data["direction"] == "out")
    assert [(e.data["direction"], e.data["message_id"]) for e in seen] == [
        ("in", "first-message"),
        ("out", None),
    ]
    assert _replies(seen) == expected_replies(["Здравствуйте"], own_phone=None)


async def test_a_page_that_reconnects_with_last_event_id_reads_only_what_it_missed(
    client: Client, worker: asyncio.Task[None]
) -> None:
    customer = await opened(client)
    await customer.say("Здравствуйте")
    async with customer.events() as stream:
        first = await stream.until(lambda e: e.data["direction"] == "out")
    await customer.say("ул. Киевская 95, кв 12")
    async with customer.events(last_id=first[-1].id) as stream:
        after = await stream.until(lambda e: e.data["direction"] == "out")
    assert [e.data["text"] for e in after] == [
        "ул. Киевская 95, кв 12",
        *expected_replies(["Здравствуйте", "ул. Киевская 95, кв 12"], own_phone=None)[1:],
    ]


async def test_a_post_repeated_with_its_id_is_one_message_and_one_order(
    client: Client,
    worker: asyncio.Task[None],
    outbox_worker: asyncio.Task[None],
    db: asyncpg.Connection,
) -> None:
    customer = await opened(client)
    # One more message after the repeats: its step runs after every copy's, so once
    # its reply is in, any reply a copy caused would be too.
    texts = [*HAPPY_PATH_RU, "Здравствуйте"]
    expected = expected_replies(texts, own_phone=None)
    async with customer.events() as stream:
        for n, text in enumerate(texts):
            for _ in range(3 if n < len(HAPPY_PATH_RU) else 1):  # the page retries a post
                await customer.say(text, message_id=f"message-{n}-of-the-page")
        replies = await replies_until(stream, len(expected))
    assert replies == expected
    count = await db.fetchval("SELECT count(*) FROM orders WHERE client_id = $1", customer.session)
    assert count == 1


async def test_one_customers_chat_stream_never_shows_anothers(
    client: Client, worker: asyncio.Task[None]
) -> None:
    alice, bob = await opened(client), await opened(client)
    await alice.say("Здравствуйте", message_id="alice-says-hello")
    await bob.say("ул. Бобова 1", message_id="bob-says-address")
    async with bob.events() as stream:
        seen = await stream.until(lambda e: e.data["direction"] == "out")
        with pytest.raises(TimeoutError):
            seen += [await stream.next(timeout=1.0)]
    assert [e.data["message_id"] for e in seen if e.data["direction"] == "in"] == [
        "bob-says-address"
    ]


async def test_an_order_moved_by_an_operator_reaches_the_customers_chat(
    client: Client,
    worker: asyncio.Task[None],
    outbox_worker: asyncio.Task[None],
    db: asyncpg.Connection,
) -> None:
    customer = await opened(client)
    async with customer.events() as stream:
        await place_order(customer, stream)
        order_id = await db.fetchval("SELECT id FROM orders WHERE client_id = $1", customer.session)
        moved = await client.post(
            f"/api/orders/{order_id}/status",
            json={"status": "PREPARING"},
            headers={"Authorization": f"Bearer {OPERATOR_KEY}"},
        )
        assert moved.status == 200, await moved.text()
        (news,) = await replies_until(stream, 1)
    assert news == status_notice(OrderStatus.PREPARING, Lang.RU, order_id)
    await poll(
        lambda: db.fetchval(
            "SELECT notified_at IS NOT NULL FROM order_events "
            "WHERE order_id = $1 AND to_status = 'PREPARING'",
            order_id,
        )
    )


async def test_a_message_while_the_broker_is_away_is_spooled_then_queued(
    make_settings: Callable[..., Settings], amqp: AbstractChannel
) -> None:
    async with running_proxy(urlsplit(make_settings().amqp_url).port or 5672) as proxy:
        proxy.outage()
        parts = urlsplit(make_settings().amqp_url)
        through = parts._replace(
            netloc=f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}"
        ).geturl()
        settings = make_settings(amqp_url=through, webchat_secret=WEBCHAT_SECRET)
        app = create_app(settings)
        async with TestClient(TestServer(app)) as own:
            customer = await opened(own)
            answer = await customer.say("Здравствуйте", message_id="said-while-away")
            proxy.restore()
            await asyncio.wait_for(app[BROKER].wait_connected(), 30)
            await wait_depth(amqp, messages_queues(settings), 1)
            (queued,) = await take_all(amqp, messages_queues(settings))
    message = decode(InboundMessage, queued.body)
    assert answer == {"status": "queued", "id": "said-while-away"}
    assert message.message_id == f"{customer.session}.said-while-away"
    assert message.conversation.provider == "webchat"
