"""The operator API: keys, tenants, paging and filters, clear errors, races on one order, and
news that reaches the customer even when the handler could not queue it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aio_pika.abc import AbstractChannel
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from dialog import Lang, OrderStatus, status_notice
from orderbot.config.settings import Settings
from orderbot.conversation.keys import Keys
from orderbot.envelopes import Conversation
from server.app import create_app
from server.keys import BROKER
from tests.support.credentials import OPERATOR_KEY
from tests.support.customers import Customer
from tests.support.fake_provider import FakeChat2Desk
from tests.support.operator_tools import bearer, get_json, history, insert_order, is_chain, move
from tests.support.processes import free_port
from tests.support.recovery import poll
from tests.support.tcp_proxy import running_proxy

Client = TestClient[Any, Any]


@pytest.fixture
def config(config: dict[str, str], namespace: str) -> dict[str, str]:
    """A tenant of this test's own, so its lists hold only the orders it made."""
    return {**config, "TENANT": f"tenant-{namespace}"}


async def _order(db: asyncpg.Connection, settings: Settings, **fields: Any) -> int:
    return await insert_order(
        db, tenant=settings.tenant, client_id=fields.pop("client_id", "42"), **fields
    )


ENDPOINTS = [
    ("GET", "/api/orders", None),
    ("GET", "/api/orders/1", None),
    ("POST", "/api/orders/1/status", {"status": "PREPARING"}),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-key-wrong-key", f"Basic {OPERATOR_KEY}", "Bearer", f"{OPERATOR_KEY}"],
)
async def test_a_bad_or_missing_key_gets_401_with_a_bearer_challenge(
    client: Client, method: str, path: str, body: Any, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = await client.request(method, path, json=body, headers=headers)

    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="orderbot"')
    answer = await response.json()
    assert answer["error"] in ("missing API key", "invalid API key")
    assert OPERATOR_KEY not in await response.text()


async def test_without_operator_api_key_the_api_is_disabled_with_a_clear_404(
    make_settings: Callable[..., Settings], amqp: AbstractChannel, redis: Redis
) -> None:
    app = create_app(make_settings(operator_api_key=None))
    async with TestClient(TestServer(app)) as disabled:
        response = await disabled.get("/api/orders", headers=bearer())
        assert response.status == 404
        assert await response.json() == {
            "error": "operator API is disabled",
            "detail": "set OPERATOR_API_KEY to enable it",
        }
        assert (await disabled.get("/api/openapi.json")).status == 200


async def test_an_unreachable_database_gets_503_with_retry_after(
    make_settings: Callable[..., Settings], amqp: AbstractChannel, redis: Redis
) -> None:
    app = create_app(make_settings(database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/x"))
    async with TestClient(TestServer(app)) as cut_off:
        response = await cut_off.get("/api/orders", headers=bearer())
        assert response.status == 503
        assert response.headers["Retry-After"] == "5"
        assert (await response.json())["error"] == "database unavailable, retry later"


async def test_another_tenants_order_is_not_found_and_not_listed(
    client: Client, db: asyncpg.Connection, settings: Settings, namespace: str
) -> None:
    theirs = await insert_order(db, tenant=f"other-{namespace}", client_id="7")
    ours = await _order(db, settings)

    assert (await get_json(client, f"/api/orders/{theirs}"))[0] == 404
    status, body = await move(client, theirs, "PREPARING")
    assert (status, body) == (404, {"error": "order not found"})
    assert await db.fetchval("SELECT status FROM orders WHERE id = $1", theirs) == "CONFIRMED"
    _, page = await get_json(client, "/api/orders")
    assert [order["id"] for order in page["orders"]] == [ours]


@pytest.mark.parametrize("order_id", ["0", "-1", "abc", "1.5", str(2**63), "9" * 40, "%00"])
async def test_ids_that_cannot_name_an_order_get_404(client: Client, order_id: str) -> None:
    response = await client.get(f"/api/orders/{order_id}", headers=bearer())
    assert response.status == 404
    assert (await response.json())["error"] in ("order not found", "not found")


async def test_the_list_pages_by_keyset_newest_first(
    client: Client, db: asyncpg.Connection, settings: Settings
) -> None:
    ids = [await _order(db, settings) for _ in range(5)]

    seen: list[int] = []
    params: dict[str, str] = {"limit": "2"}
    pages = 0
    while True:
        status, page = await get_json(client, "/api/orders", **params)
        assert status == 200
        pages += 1
        seen.extend(order["id"] for order in page["orders"])
        if page["next_after"] is None:
            break
        params["after"] = str(page["next_after"])
    assert seen == sorted(ids, reverse=True)
    assert pages == 3


async def test_the_list_filters_by_status_client_and_creation_time(
    client: Client, db: asyncpg.Connection, settings: Settings
) -> None:
    day = datetime(2024, 5, 1, tzinfo=UTC)
    old = await _order(db, settings, client_id="1", created_at=day - timedelta(days=1))
    mid = await _order(db, settings, client_id="2", created_at=day, status="PREPARING")
    new = await _order(db, settings, client_id="2", created_at=day + timedelta(days=1))

    async def ids(**params: str) -> list[int]:
        status, page = await get_json(client, "/api/orders", **params)
        assert status == 200, page
        return [order["id"] for order in page["orders"]]

    assert await ids(status="PREPARING") == [mid]
    assert await ids(client_id="2") == [new, mid]
    assert await ids(created_from="2024-05-01") == [new, mid]
    assert await ids(created_to="2024-05-01T00:00:00Z") == [old]
    assert await ids(created_from="2024-05-01T06:00:00+06:00", created_to="2024-05-02") == [mid]
    assert await ids(client_id="2", status="CONFIRMED") == [new]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"status": "SHIPPED"}, "status"),
        ({"created_from": "yesterday"}, "created_from"),
        ({"after": "-5"}, "after"),
        ({"client_id": "a b"}, "client_id"),
        ({"stauts": "PREPARING"}, "stauts"),  # a misspelt filter is refused, not ignored
    ],
)
async def test_a_bad_query_gets_422_naming_the_parameter(
    client: Client, params: dict[str, str], field: str
) -> None:
    status, body = await get_json(client, "/api/orders", **params)

    assert status == 422
    assert body["error"] == "invalid query"
    assert [problem["field"] for problem in body["detail"]] == [field]


async def test_a_repeated_query_parameter_gets_422(client: Client) -> None:
    response = await client.get("/api/orders?limit=1&limit=2", headers=bearer())
    assert response.status == 422
    assert (await response.json())["detail"] == [
        {"field": "limit", "problem": "given more than once"}
    ]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"", "empty body: expected a JSON object"),
        (b"{status: PREPARING}", "malformed JSON: expected a JSON object"),
        (b'["PREPARING"]', "expected a JSON object"),
        (b"{}", [{"field": "status", "problem": "Field required"}]),
        (b'{"status": "SHIPPED"}', None),
        (b'{"status": 3}', None),
        (b'{"status": "PREPARING", "note": "x"}', [{"field": "note", "problem": None}]),
    ],
)
async def test_a_malformed_body_gets_422_saying_what_is_wrong(
    client: Client, db: asyncpg.Connection, settings: Settings, body: bytes, detail: Any
) -> None:
    order_id = await _order(db, settings)
    response = await client.post(
        f"/api/orders/{order_id}/status",
        data=body,
        headers={**bearer(), "Content-Type": "application/json"},
    )

    assert response.status == 422
    answer = await response.json()
    assert answer["error"] == "invalid body"
    if isinstance(detail, str):
        assert answer["detail"] == detail
    elif isinstance(detail, list):
        assert [p["field"] for p in answer["detail"]] == [d["field"] for d in detail]
    else:
        assert answer["detail"][0]["field"] == "status"
    assert await db.fetchval("SELECT status FROM orders WHERE id = $1", order_id) == "CONFIRMED"


async def test_a_huge_body_gets_413(
    client: Client, db: asyncpg.Connection, settings: Settings
) -> None:
    order_id = await _order(db, settings)
    response = await client.post(
        f"/api/orders/{order_id}/status",
        data=b"{" + b" " * (settings.http_max_body + 1) + b"}",
        headers=bearer(),
    )
    assert response.status == 413
    assert (await response.json())["error"] == "request body too large"


@pytest.mark.parametrize(
    ("start", "target", "allowed"),
    [
        ("CONFIRMED", "DELIVERED", ["PREPARING", "CANCELLED"]),
        ("CONFIRMED", "CONFIRMED", ["PREPARING", "CANCELLED"]),
        ("PREPARING", "PREPARING", ["OUT_FOR_DELIVERY", "CANCELLED"]),
        ("OUT_FOR_DELIVERY", "RATED", ["DELIVERED", "CANCELLED"]),
        ("DELIVERED", "CANCELLED", []),  # too late to cancel
        ("DELIVERED", "RATED", []),  # only the customer's answer rates an order
        ("CANCELLED", "PREPARING", []),
        ("RATED", "CONFIRMED", []),
    ],
)
async def test_an_illegal_transition_gets_409_with_the_allowed_ones(
    client: Client,
    db: asyncpg.Connection,
    settings: Settings,
    start: str,
    target: str,
    allowed: list[str],
) -> None:
    order_id = await _order(db, settings, status=start)

    status, body = await move(client, order_id, target)

    assert status == 409
    assert body == {
        "error": "illegal status transition",
        "detail": f"an order in {start} cannot move to {target}",
        "current": start,
        "allowed": allowed,
    }
    assert await history(db, order_id) == [(None, start, "dialog")]


async def test_a_change_answers_the_order_with_its_history(
    client: Client, db: asyncpg.Connection, settings: Settings
) -> None:
    order_id = await _order(db, settings)

    status, body = await move(client, order_id, "PREPARING")

    assert status == 200
    assert body["id"] == order_id
    assert body["status"] == "PREPARING"
    assert [(e["from_status"], e["to_status"], e["actor"]) for e in body["history"]] == [
        (None, "CONFIRMED", "dialog"),
        ("CONFIRMED", "PREPARING", "operator"),
    ]
    assert (await get_json(client, f"/api/orders/{order_id}"))[1] == body


async def test_concurrent_changes_of_one_order_exactly_one_wins(
    client: Client, db: asyncpg.Connection, settings: Settings
) -> None:
    order_id = await _order(db, settings)

    results = await asyncio.gather(*(move(client, order_id, "PREPARING") for _ in range(20)))

    assert sorted(status for status, _ in results) == [200] + [409] * 19
    assert all(body["current"] == "PREPARING" for status, body in results if status == 409)
    assert await history(db, order_id) == [
        (None, "CONFIRMED", "dialog"),
        ("CONFIRMED", "PREPARING", "operator"),
    ]


async def test_racing_operators_leave_a_history_without_gaps(
    client: Client, db: asyncpg.Connection, settings: Settings
) -> None:
    """Four operators push one order forward at once, each as fast as it can."""
    order_id = await _order(db, settings)
    forward = ["PREPARING", "OUT_FOR_DELIVERY", "DELIVERED"]

    async def operator() -> list[int]:
        return [(await move(client, order_id, target))[0] for target in forward]

    statuses = [s for run in await asyncio.gather(*(operator() for _ in range(4))) for s in run]

    assert statuses.count(200) == 3
    assert set(statuses) <= {200, 409}
    events = await history(db, order_id)
    assert [e[1] for e in events] == ["CONFIRMED", *forward]
    assert is_chain(events)


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{port}"))


async def test_news_the_handler_could_not_queue_is_relayed_in_order(
    make_settings: Callable[..., Settings],
    settings: Settings,
    outbox_worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    db: asyncpg.Connection,
    redis: Redis,
    amqp: AbstractChannel,
) -> None:
    customer = Customer()
    order_id = await _order(db, settings, client_id=customer.client_id)
    forward = [OrderStatus.PREPARING, OrderStatus.OUT_FOR_DELIVERY, OrderStatus.DELIVERED]
    async with running_proxy(urlsplit(settings.amqp_url).port or 5672) as proxy:
        app = create_app(make_settings(amqp_url=_via(settings.amqp_url, proxy.port)))
        async with TestClient(TestServer(app)) as server:
            await asyncio.wait_for(app[BROKER].wait_connected(), 30)
            proxy.outage("refuse")  # the server's broker is gone; the outbox worker's is not
            for status in forward:
                assert (await move(server, order_id, status.value))[0] == 200
            pending = await db.fetchval(
                "SELECT count(*) FROM order_events WHERE order_id = $1 AND notified_at IS NULL",
                order_id,
            )
            assert pending == 3

            expected = [status_notice(s, Lang.EN, order_id) for s in forward]
            await fake.wait_for(lambda: len(fake.texts_for(customer.client_id)) >= 3)

    assert fake.texts_for(customer.client_id) == expected
    # The relay marks the news told when its transaction commits, which may be after the
    # outbox worker already delivered what it published.
    await poll(
        lambda: _untold(db, order_id, expect=0),
    )
    owed = await redis.get(
        Keys(settings.redis_key_prefix).rating(
            Conversation(tenant=settings.tenant, provider="chat2desk", client_id=customer.client_id)
        )
    )
    assert owed is not None
    assert f'"order_id":{order_id}' in owed


def test_the_operator_key_is_a_secret_for_the_log_redactor(settings: Settings) -> None:
    assert OPERATOR_KEY in settings.secrets()


def test_a_short_operator_key_is_refused_at_start(make_settings: Callable[..., Settings]) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="at least 16 characters"):
        make_settings(operator_api_key="short")
    assert make_settings(operator_api_key="").operator_api_key is not None


async def test_an_order_shows_its_pin_as_a_map_link_and_its_attachments(
    client: Client, db: asyncpg.Connection, settings: Settings
) -> None:
    order_id = await _order(db, settings)
    photo = {"url": "https://cdn.example/door.jpg", "content_type": "image/jpeg"}
    await db.execute(
        "UPDATE orders SET latitude = 42.5, longitude = 74.25, attachments = $2::jsonb"
        " WHERE id = $1",
        order_id,
        f'[{{"url": "{photo["url"]}", "content_type": "{photo["content_type"]}"}}]',
    )

    status, body = await get_json(client, f"/api/orders/{order_id}")

    assert status == 200
    assert body["location"] == {
        "latitude": 42.5,
        "longitude": 74.25,
        "map_url": "https://www.openstreetmap.org/?mlat=42.500000&mlon=74.250000"
        "#map=17/42.500000/74.250000",
    }
    assert body["attachments"] == [photo]


async def test_an_order_without_a_pin_shows_none(
    client: Client, db: asyncpg.Connection, settings: Settings
) -> None:
    status, body = await get_json(client, f"/api/orders/{await _order(db, settings)}")

    assert status == 200
    assert (body["location"], body["attachments"]) == (None, [])


async def _untold(db: asyncpg.Connection, order_id: int, *, expect: int) -> bool:
    untold: int = await db.fetchval(
        "SELECT count(*) FROM order_events WHERE order_id = $1 AND notified_at IS NULL", order_id
    )
    return untold == expect
