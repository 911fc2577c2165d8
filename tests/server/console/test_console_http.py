"""The console over plain HTTP: its session cookie, CSRF and Origin checks, the bound on
sign-in attempts, sign-out, its security headers, refused moves, search and the DLQ."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractChannel
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from orderbot.amqp import dead_letters
from orderbot.amqp.topology import Topology
from orderbot.config.settings import Settings
from server.app import create_app
from server.console.guard import CSP
from tests.support.broker_tools import wait_depth
from tests.support.console import (
    COOKIE,
    csrf_token,
    order_page,
    page,
    post_form,
    session_cookie,
    sign_in_http,
    signed_in,
    with_session,
)
from tests.support.credentials import CONSOLE_SECRET, OPERATOR_KEY, PUBLIC_BASE_URL
from tests.support.operator_tools import bearer, history, insert_order

Client = TestClient[Any, Any]


@pytest.fixture
def config(config: dict[str, str], namespace: str) -> dict[str, str]:
    return {**config, "TENANT": f"tenant-{namespace}", "CONSOLE_SESSION_SECRET": CONSOLE_SECRET}


async def test_the_key_buys_an_httponly_strict_secure_cookie_that_does_not_hold_it(
    client: Client,
) -> None:
    response = await sign_in_http(client)

    assert response.status == 303
    assert response.headers["Location"] == "/console/"
    set_cookie = response.headers["Set-Cookie"]
    for attribute in ("HttpOnly", "SameSite=Strict", "Secure", "Path=/console", "Max-Age=43200"):
        assert attribute in set_cookie
    assert OPERATOR_KEY not in set_cookie
    status, html = await page(client, "/console/", session_cookie(response))
    assert status == 200
    assert 'data-testid="board"' in html


async def test_a_wrong_key_gets_401_and_no_cookie(client: Client) -> None:
    response = await sign_in_http(client, key="not-the-operator-key-at-all")

    assert response.status == 401
    assert COOKIE not in response.cookies
    assert 'data-testid="login-error"' in await response.text()


async def test_without_a_session_every_page_sends_the_browser_to_sign_in(client: Client) -> None:
    for path in ("/console/", "/console/orders/1", "/console/dlq", "/console/events"):
        response = await client.get(path, allow_redirects=False)
        assert (response.status, response.headers["Location"]) == (303, "/console/login"), path


async def test_a_tampered_cookie_is_no_session(client: Client) -> None:
    cookie = await signed_in(client)
    payload, signature = cookie.split(".")
    forged = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1] + "." + signature

    status, _ = await page(client, "/console/", forged)

    assert status == 303


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data; boundary=xyz", b"not a multipart body"),
        ("multipart/form-data", b"--x\r\n"),
        ("application/x-www-form-urlencoded", b"key=\xff\xfe"),
    ],
)
async def test_a_body_no_form_sends_is_a_400_page_not_a_server_error(
    client: Client, content_type: str, body: bytes
) -> None:
    response = await client.post(
        "/console/login",
        data=body,
        headers={"Origin": PUBLIC_BASE_URL, "Content-Type": content_type},
        allow_redirects=False,
    )

    assert response.status == 400
    assert "unreadable form" in await response.text()


async def test_a_sign_in_from_another_site_is_refused(client: Client) -> None:
    response = await sign_in_http(client, origin="https://evil.example.net")

    assert response.status == 403
    assert COOKIE not in response.cookies


async def test_a_move_without_the_session_s_csrf_token_is_refused_and_moves_nothing(
    client: Client, db: asyncpg.Connection, settings: Settings
) -> None:
    order_id = await insert_order(db, tenant=settings.tenant, client_id="csrf-1")
    cookie = await signed_in(client)

    for form in ({"status": "PREPARING"}, {"status": "PREPARING", "csrf": "guessed-token"}):
        response = await post_form(client, f"/console/orders/{order_id}/status", cookie, form)
        assert response.status == 403

    assert await history(db, order_id) == [(None, "CONFIRMED", "dialog")]


async def test_a_move_from_another_origin_is_refused_even_with_the_token(
    client: Client, db: asyncpg.Connection, settings: Settings
) -> None:
    order_id = await insert_order(db, tenant=settings.tenant, client_id="origin-1")
    cookie, html = await order_page(client, order_id)

    response = await post_form(
        client,
        f"/console/orders/{order_id}/status",
        cookie,
        {"status": "PREPARING", "csrf": csrf_token(html)},
        origin="https://evil.example.net",
    )

    assert response.status == 403
    assert await history(db, order_id) == [(None, "CONFIRMED", "dialog")]


async def test_a_move_with_the_token_goes_through_the_lifecycle(
    client: Client, db: asyncpg.Connection, settings: Settings
) -> None:
    order_id = await insert_order(db, tenant=settings.tenant, client_id="move-1")
    cookie, html = await order_page(client, order_id)

    response = await post_form(
        client,
        f"/console/orders/{order_id}/status",
        cookie,
        {"status": "PREPARING", "csrf": csrf_token(html)},
    )

    assert (response.status, response.headers["Location"]) == (303, f"/console/orders/{order_id}")
    assert await history(db, order_id) == [
        (None, "CONFIRMED", "dialog"),
        ("CONFIRMED", "PREPARING", "operator"),
    ]


async def test_a_move_the_rules_refuse_shows_why_and_moves_nothing(
    client: Client, db: asyncpg.Connection, settings: Settings
) -> None:
    order_id = await insert_order(db, tenant=settings.tenant, client_id="refused-1")
    cookie, html = await order_page(client, order_id)
    assert 'data-testid="move-DELIVERED"' not in html  # not offered, and refused if forced

    response = await post_form(
        client,
        f"/console/orders/{order_id}/status",
        cookie,
        {"status": "DELIVERED", "csrf": csrf_token(html)},
    )

    assert response.status == 409
    assert "an order in CONFIRMED cannot move to DELIVERED" in await response.text()
    assert await history(db, order_id) == [(None, "CONFIRMED", "dialog")]


async def test_without_a_session_secret_the_console_is_off_and_says_so(
    make_settings: Callable[..., Settings], amqp: AbstractChannel, redis: Redis
) -> None:
    app = create_app(make_settings(console_session_secret=None))
    async with TestClient(TestServer(app)) as off:
        page_response = await off.get("/console/login")
        sign_in_response = await sign_in_http(off)

        assert page_response.status == 404
        assert "the console is off" in await page_response.text()
        assert sign_in_response.status == 404
        assert COOKIE not in sign_in_response.cookies


async def test_sign_in_attempts_are_bounded_per_address_even_with_the_right_key(
    make_settings: Callable[..., Settings], amqp: AbstractChannel, redis: Redis
) -> None:
    app = create_app(make_settings(console_signin_attempts=3))
    async with TestClient(TestServer(app)) as limited:
        for _ in range(3):
            assert (await sign_in_http(limited, key="a-wrong-guess-of-the-key")).status == 401

        response = await sign_in_http(limited)

        assert response.status == 429
        assert int(response.headers["Retry-After"]) > 0
        assert COOKIE not in response.cookies


async def test_signing_out_ends_the_session_for_every_copy_of_the_cookie(client: Client) -> None:
    cookie = await signed_in(client)
    _, html = await page(client, "/console/", cookie)

    response = await post_form(client, "/console/logout", cookie, {"csrf": csrf_token(html)})

    assert (response.status, response.headers["Location"]) == (303, "/console/login")
    assert 'orderbot_console=""' in response.headers["Set-Cookie"]
    assert (await page(client, "/console/", cookie))[0] == 303


async def test_a_new_operator_key_ends_the_sessions_of_the_old_one(
    client: Client, make_settings: Callable[..., Settings]
) -> None:
    cookie = await signed_in(client)
    app = create_app(make_settings(operator_api_key="a-brand-new-operator-key-7d1"))
    async with TestClient(TestServer(app)) as rotated:
        assert (await page(rotated, "/console/", cookie))[0] == 303


async def test_with_redis_down_a_page_says_a_service_is_unavailable(
    client: Client, make_settings: Callable[..., Settings]
) -> None:
    cookie = await signed_in(client)
    app = create_app(make_settings(redis_url="redis://127.0.0.1:1/0"))
    async with TestClient(TestServer(app)) as cut_off:
        for path in ("/console/", "/console/login"):
            response = await cut_off.get(path, headers=with_session(cookie))

            assert response.status == 503
            assert response.headers["Retry-After"] == "5"
            assert "a service is unavailable" in await response.text()


async def test_pages_forbid_inline_scripts_framing_and_caching(client: Client) -> None:
    cookie = await signed_in(client)
    for path in ("/console/login", "/console/"):
        response = await client.get(path, headers=with_session(cookie))
        assert response.headers["Content-Security-Policy"] == CSP
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Cache-Control"] == "no-store"
        assert "<script>" not in await response.text()
    assert "script-src 'self'" in CSP
    assert "frame-ancestors 'none'" in CSP
    static = await client.get("/console/static/console.js")
    assert static.status == 200
    assert static.headers["Content-Type"].startswith(("text/javascript", "application/javascript"))


@pytest.mark.parametrize("query", ["555 12 34 56", "+996555123456", "search-42"])
async def test_search_finds_an_order_by_phone_digits_or_client_id(
    client: Client, db: asyncpg.Connection, settings: Settings, query: str
) -> None:
    order_id = await insert_order(db, tenant=settings.tenant, client_id="search-42")
    other = await insert_order(db, tenant="another-tenant", client_id="search-42")
    cookie = await signed_in(client)

    response = await client.get("/console/", params={"q": query}, headers=with_session(cookie))

    html = await response.text()
    assert f'data-order-id="{order_id}"' in html
    assert f'data-order-id="{other}"' not in html


async def park(amqp: AbstractChannel, settings: Settings, tenant: str, message_id: str) -> None:
    """A reply that exhausted its retries, parked as the outbox parks one."""
    topology = Topology.from_settings(settings)
    await amqp.default_exchange.publish(
        aio_pika.Message(
            b"{}",
            message_id=message_id,
            headers={
                dead_letters.TENANT: tenant,
                dead_letters.CLIENT: "client-7",
                dead_letters.REASON: "provider kept failing",
                dead_letters.SOURCE_QUEUE: topology.outbox,
            },
        ),
        routing_key=topology.dlq,
    )


async def test_an_operator_sees_and_replays_only_their_tenant_s_dead_letters(
    client: Client, amqp: AbstractChannel, settings: Settings
) -> None:
    topology = Topology.from_settings(settings)
    await park(amqp, settings, settings.tenant, "ours-1")
    await park(amqp, settings, "another-tenant", "theirs-1")
    cookie = await signed_in(client)

    status, html = await page(client, "/console/dlq", cookie)
    assert status == 200
    assert 'data-message-id="ours-1"' in html
    assert "theirs-1" not in html

    response = await post_form(
        client, "/console/dlq/replay", cookie, {"all": "1", "csrf": csrf_token(html)}
    )

    assert (response.status, response.headers["Location"]) == (303, "/console/dlq?replayed=1")
    await wait_depth(amqp, topology.outbox, 1)
    await wait_depth(amqp, topology.dlq, 1)  # theirs stays parked


async def first_event(client: Client, cookie: str, last_id: str) -> dict[str, Any]:
    """The first event of the console's stream after `last_id`."""
    response = await client.get(
        "/console/events", params={"last_event_id": last_id}, headers=with_session(cookie)
    )
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    async with asyncio.timeout(10):
        while True:
            line = (await response.content.readline()).decode()
            if line.startswith("data: "):
                response.close()
                found: dict[str, Any] = json.loads(line.removeprefix("data: "))
                return found


async def test_an_order_moved_after_the_board_was_rendered_is_the_stream_s_first_event(
    client: Client, db: asyncpg.Connection, settings: Settings
) -> None:
    order_id = await insert_order(db, tenant=settings.tenant, client_id="gap-1")
    cookie = await signed_in(client)
    _, html = await page(client, "/console/", cookie)
    rendered = re.search(r'data-last-event-id="([^"]+)"', html)
    assert rendered is not None

    moved = await client.post(
        f"/api/orders/{order_id}/status", json={"status": "PREPARING"}, headers=bearer()
    )
    assert moved.status == 200

    event = await first_event(client, cookie, rendered.group(1))
    assert (event["tenant"], event["kind"]) == (settings.tenant, "order")
    assert (event["data"]["order_id"], event["data"]["status"]) == (order_id, "PREPARING")
