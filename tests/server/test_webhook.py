"""The webhook edge: 2xx only once a message is durable (confirmed by the broker, or in
the edge spool: tests/server/test_spool.py), and a clear 4xx JSON error for every kind
of bad input, with nothing queued."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aio_pika.abc import AbstractChannel
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from orderbot.config.settings import Settings
from orderbot.envelopes import InboundMessage, decode
from server.app import create_app
from server.keys import BROKER
from tests.support.broker_tools import depth, messages_queues, take_all
from tests.support.credentials import WEBHOOK_TOKEN
from tests.support.customers import Customer

Client = TestClient[Any, Any]


async def test_client_message_is_queued_after_confirm(
    client: Client, amqp: AbstractChannel, settings: Settings, webhook_url: Callable[[str], str]
) -> None:
    customer = Customer()
    response = await client.post(webhook_url(""), json=customer.says("hello", message_id="m-1"))

    assert response.status == 200
    assert await response.json() == {"status": "queued"}
    [message] = await take_all(amqp, messages_queues(settings))
    assert message.delivery_mode == 2  # persistent
    inbound = decode(InboundMessage, message.body)
    assert inbound.message_id == "m-1"
    assert inbound.text == "hello"
    assert inbound.conversation.client_id == customer.client_id
    assert inbound.conversation.transport == "whatsapp"
    assert inbound.conversation.channel_id == "4242"


async def test_events_other_than_client_messages_are_acknowledged_and_dropped(
    client: Client, amqp: AbstractChannel, settings: Settings, webhook_url: Callable[[str], str]
) -> None:
    for body in ({"type": "to_client", "text": "operator"}, {"hook_type": "dialog_closed"}):
        response = await client.post(webhook_url(""), json=body)
        assert response.status == 200
        assert await response.json() == {"status": "ignored"}
    assert await depth(amqp, messages_queues(settings)) == 0


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_edge_writes_nothing_to_redis(
    client: Client, redis: Redis, namespace: str, webhook_url: Callable[[str], str]
) -> None:
    await client.post(webhook_url(""), json=Customer().says("hello"))

    assert [key async for key in redis.scan_iter(match=f"{namespace}:*")] == []


async def test_health_endpoints_answer(client: Client) -> None:
    assert (await client.get("/health")).status == 200
    ready = await client.get("/health/ready")
    assert ready.status == 200
    assert (await ready.json())["checks"] == {"broker": "ok", "redis": "ok", "postgres": "ok"}
    assert (await client.get("/")).status == 200


BAD_BODIES: list[tuple[str, bytes, int, str]] = [
    ("malformed json", b'{"message_id": 1,', 400, "malformed JSON"),
    ("empty body", b"", 400, "empty body"),
    ("json array", b"[1, 2, 3]", 422, "invalid body"),
    ("json string", b'"hello"', 422, "invalid body"),
    ("missing ids", b'{"type": "from_client", "text": "hi"}', 422, "invalid body"),
    (
        "id of wrong type",
        b'{"type": "from_client", "message_id": [1], "client_id": 5}',
        422,
        "invalid body",
    ),
    (
        "text of wrong type",
        b'{"type": "from_client", "message_id": 1, "client_id": 5, "text": 5}',
        422,
        "invalid body",
    ),
    ("type of wrong type", b'{"type": 7, "message_id": 1, "client_id": 5}', 422, "invalid body"),
    (
        "boolean id",
        b'{"type": "from_client", "message_id": true, "client_id": 5}',
        422,
        "invalid body",
    ),
    ("not utf-8", b'{"type": "from_client", "text": "\xff\xfe"}', 400, "malformed JSON"),
]


@pytest.mark.parametrize(
    ("case", "body", "status", "error"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES]
)
async def test_bad_body_gets_clear_json_error_and_queues_nothing(
    client: Client,
    amqp: AbstractChannel,
    settings: Settings,
    webhook_url: Callable[[str], str],
    case: str,
    body: bytes,
    status: int,
    error: str,
) -> None:
    response = await client.post(
        webhook_url(""), data=body, headers={"Content-Type": "application/json"}
    )

    assert response.status == status
    assert (await response.json())["error"] == error
    assert await depth(amqp, messages_queues(settings)) == 0


@pytest.mark.parametrize("message_id", ["🍕" * 30, "x" * 129, "two words"])
async def test_an_id_amqp_cannot_carry_is_refused_and_publishing_goes_on(
    client: Client,
    amqp: AbstractChannel,
    settings: Settings,
    webhook_url: Callable[[str], str],
    message_id: str,
) -> None:
    customer = Customer()
    refused = await client.post(webhook_url(""), json=customer.says("hi", message_id=message_id))
    accepted = await client.post(webhook_url(""), json=customer.says("hi"))

    assert refused.status == 422
    assert accepted.status == 200
    assert await depth(amqp, messages_queues(settings)) == 1


async def test_an_id_too_long_is_refused_in_characters(
    client: Client, webhook_url: Callable[[str], str]
) -> None:
    response = await client.post(webhook_url(""), json=Customer().says("hi", message_id="x" * 129))
    detail = (await response.json())["detail"]
    assert detail == [
        {"field": "message_id", "problem": "String should have at most 128 characters"}
    ]


async def test_invalid_body_error_names_the_fields(
    client: Client, webhook_url: Callable[[str], str]
) -> None:
    response = await client.post(webhook_url(""), json={"type": "from_client", "text": "hi"})
    detail = (await response.json())["detail"]
    assert {d["field"] for d in detail} == {"message_id", "client_id"}


async def test_huge_body_gets_413(
    client: Client, amqp: AbstractChannel, settings: Settings, webhook_url: Callable[[str], str]
) -> None:
    body = orjson.dumps({**Customer().says("x"), "text": "x" * 2_000_000})
    response = await client.post(
        webhook_url(""), data=body, headers={"Content-Type": "application/json"}
    )

    assert response.status == 413
    assert (await response.json())["error"] == "request body too large"
    assert await depth(amqp, messages_queues(settings)) == 0


async def test_wrong_token_gets_403_without_echoing_it(
    client: Client, amqp: AbstractChannel, settings: Settings
) -> None:
    response = await client.post("/webhook/chat2desk/guessed-token", json=Customer().says("hi"))

    assert response.status == 403
    body = await response.text()
    assert "guessed-token" not in body
    assert WEBHOOK_TOKEN not in body
    assert await depth(amqp, messages_queues(settings)) == 0


async def test_unknown_route_and_method_get_json_errors(client: Client) -> None:
    missing = await client.get("/nope")
    wrong_method = await client.get(f"/webhook/chat2desk/{WEBHOOK_TOKEN}")
    assert (missing.status, (await missing.json())["error"]) == (404, "not found")
    assert (wrong_method.status, (await wrong_method.json())["error"]) == (
        405,
        "method not allowed",
    )


async def test_redis_down_changes_nothing_at_the_edge(
    make_settings: Callable[..., Settings], amqp: AbstractChannel, webhook_url: Callable[[str], str]
) -> None:
    settings = make_settings(redis_url=f"redis://127.0.0.1:{_unused_port()}/0")
    app = create_app(settings)
    async with TestClient(TestServer(app)) as client:
        await app[BROKER].wait_connected()
        response = await client.post(webhook_url(""), json=Customer().says("hello"))

    assert response.status == 200
    assert await depth(amqp, messages_queues(settings)) == 1
