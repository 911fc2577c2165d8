"""`GET /api/events`: the key's tenant's live events as SSE, resumable by Last-Event-ID,
kept alive, capped per tenant, ended at shutdown, and never another tenant's."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest
from aio_pika.abc import AbstractChannel
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from orderbot.config.secret_box import SecretBox, new_key
from orderbot.config.settings import Settings
from orderbot.events.models import LiveEvent
from server.app import create_app
from server.keys import BROKER, EVENTS
from tests.support.operator_tools import bearer, insert_order, move
from tests.support.processes import free_port, wait_http_ok
from tests.support.sse import SseReader
from tests.support.tenant_rows import TenantRow, add_tenant, remove, wait_known

Client = TestClient[Any, Any]


@pytest.fixture
def master_key() -> str:
    return new_key()


@pytest.fixture
def config(config: dict[str, str], namespace: str, master_key: str) -> dict[str, str]:
    """A tenant of this test's own, and a tenants table for the two-tenant tests."""
    return {
        **config,
        "TENANT": f"tenant-{namespace}",
        "ORDERBOT_MASTER_KEY": master_key,
        "EVENTS_KEEPALIVE": "100ms",
        "EVENTS_MAX_STREAMS": "2",
    }


@pytest.fixture
async def two_tenants(
    client: Client, db: asyncpg.Connection, master_key: str
) -> AsyncIterator[tuple[TenantRow, TenantRow]]:
    box = SecretBox(master_key)
    rows = (await add_tenant(db, box, "north"), await add_tenant(db, box, "south"))
    assert client.app is not None
    await wait_known(client.app, *rows)
    yield rows
    await remove(db, *rows)


async def _open(
    client: Client, headers: dict[str, str], last_id: str | None = None
) -> aiohttp.ClientResponse:
    if last_id is not None:
        headers = {**headers, "Last-Event-ID": last_id}
    return await client.get("/api/events", headers=headers)


async def test_without_a_key_the_stream_is_401(client: Client) -> None:
    response = await client.get("/api/events")
    assert response.status == 401
    assert (await response.json())["error"] == "missing API key"


async def test_a_malformed_last_event_id_is_400(client: Client) -> None:
    response = await _open(client, bearer(), last_id="1-0; event: forged")
    assert response.status == 400
    assert (await response.json())["error"] == "invalid Last-Event-ID"


async def test_a_status_move_is_an_order_event_on_the_open_stream(
    client: Client, db: asyncpg.Connection, settings: Settings
) -> None:
    order_id = await insert_order(db, tenant=settings.tenant, client_id="77")
    # From the start of this test's tenant's stream: whether the move lands before or
    # after the server's first read, it is on the stream.
    response = await _open(client, bearer(), last_id="0-0")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert (await move(client, order_id, "PREPARING"))[0] == 200
    event = await SseReader(response).next()
    response.close()
    assert event.event == "order"
    assert event.data["tenant"] == settings.tenant
    assert event.data["data"] == {
        "order_id": order_id,
        "status": "PREPARING",
        "previous": "CONFIRMED",
        "client_id": "77",
        "provider": "chat2desk",
    }
    assert event.id == event.data["id"]


async def test_a_client_that_reconnects_with_last_event_id_gets_only_what_it_missed(
    client: Client, db: asyncpg.Connection, settings: Settings
) -> None:
    order_id = await insert_order(db, tenant=settings.tenant, client_id="78")
    for status in ("PREPARING", "OUT_FOR_DELIVERY", "DELIVERED"):
        assert (await move(client, order_id, status))[0] == 200
    response = await _open(client, bearer(), last_id="0-0")
    first = await SseReader(response).next()
    response.close()
    response = await _open(client, bearer(), last_id=first.id)
    stream = SseReader(response)
    rest = [await stream.next(), await stream.next()]
    response.close()
    assert first.data["data"]["status"] == "PREPARING"
    assert [e.data["data"]["status"] for e in rest] == ["OUT_FOR_DELIVERY", "DELIVERED"]


async def test_an_idle_stream_sends_keep_alive_comments_and_a_retry_hint(
    client: Client,
) -> None:
    response = await _open(client, bearer())
    stream = SseReader(response)
    with pytest.raises(TimeoutError):
        await stream.next(timeout=0.5)  # nothing happens; EVENTS_KEEPALIVE is 100 ms
    response.close()
    assert "keep-alive" in stream.comments
    assert stream.retry is not None


async def test_one_tenant_never_sees_another_tenants_events(
    client: Client, db: asyncpg.Connection, two_tenants: tuple[TenantRow, TenantRow]
) -> None:
    north, south = two_tenants
    orders = {}
    for row in (north, south):
        orders[row.slug] = await insert_order(db, tenant=row.slug, client_id="5")
    for row in (south, north, south):
        response = await client.post(
            f"/api/orders/{orders[row.slug]}/status",
            json={"status": "PREPARING" if row is north else "CANCELLED"},
            headers=row.bearer(),
        )
        assert response.status in (200, 409)
    assert client.app is not None
    await client.app[EVENTS].publish(LiveEvent.now(south.slug, "order", order_id=0))
    response = await _open(client, north.bearer(), last_id="0-0")
    stream = SseReader(response)
    (event,) = [await stream.next()]
    with pytest.raises(TimeoutError):
        await stream.next(timeout=0.5)
    response.close()
    assert event.data["tenant"] == north.slug
    assert event.data["data"]["order_id"] == orders[north.slug]


async def test_past_the_cap_a_tenants_next_stream_is_429_until_one_closes(
    client: Client,
) -> None:
    first, second = await _open(client, bearer()), await _open(client, bearer())
    assert (first.status, second.status) == (200, 200)
    third = await _open(client, bearer())
    assert third.status == 429
    assert third.headers["Retry-After"]
    first.close()

    async def admitted() -> bool:
        again = await _open(client, bearer())
        again.close()
        return again.status == 200

    # The server sees the close at its next keep-alive write.
    async with asyncio.timeout(15):
        while not await admitted():
            await asyncio.sleep(0.05)
    second.close()


async def test_shutting_the_server_down_ends_open_streams_at_once(
    make_settings: Callable[..., Settings], amqp: AbstractChannel, redis: Redis
) -> None:
    settings = make_settings(shutdown_timeout="20s", events_keepalive="30s")
    app = create_app(settings)
    server = TestServer(app)
    async with TestClient(server) as own:
        await asyncio.wait_for(app[BROKER].wait_connected(), 30)
        response = await _open(own, bearer())
        assert response.status == 200
        started = time.monotonic()
        await server.close()
        assert await SseReader(response).ended()
        elapsed = time.monotonic() - started
    assert elapsed < 10  # not SHUTDOWN_TIMEOUT (20 s): the stream did not hold it up


async def test_a_server_with_open_streams_exits_0_soon_after_sigterm(
    spawn: Callable[..., Any], config: dict[str, str]
) -> None:
    port = free_port()
    server = await spawn(
        "server", HTTP_PORT=str(port), SHUTDOWN_TIMEOUT="30s", EVENTS_KEEPALIVE="30s"
    )
    base = f"http://127.0.0.1:{port}"
    await wait_http_ok(f"{base}/health")
    async with aiohttp.ClientSession() as session:
        streams = [await session.get(f"{base}/api/events", headers=bearer()) for _ in range(2)]
        assert [s.status for s in streams] == [200, 200]
        started = time.monotonic()
        server.send(signal.SIGTERM)
        assert await server.wait(timeout=20) == 0
        elapsed = time.monotonic() - started
        for stream in streams:
            stream.close()
    assert elapsed < 15  # well inside SHUTDOWN_TIMEOUT (30 s)
