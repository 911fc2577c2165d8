"""Control characters in what providers send: refused in names, dropped from free text,
so nothing that reaches PostgreSQL or Redis holds a NUL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel
from aiohttp.test_utils import TestClient

from orderbot.config.settings import Settings
from orderbot.envelopes import InboundMessage, decode
from tests.support.broker_tools import depth, messages_queues, take_all
from tests.support.customers import Customer
from tests.support.twilio import WhatsAppCustomer, post

Client = TestClient[Any, Any]


@pytest.mark.parametrize("transport", ["wa\u0000", "\u0000", "wa\u001b[31m", "wa\u0085", "w\ta"])
async def test_a_transport_with_a_control_character_is_422_and_nothing_is_queued(
    client: Client,
    amqp: AbstractChannel,
    settings: Settings,
    webhook_url: Callable[[str], str],
    transport: str,
) -> None:
    body = {**Customer().says("yes"), "transport": transport}
    response = await client.post(webhook_url(""), json=body)

    assert response.status == 422
    problems = (await response.json())["detail"]
    assert [p["field"] for p in problems] == ["transport"]
    assert "control characters" in problems[0]["problem"]
    assert await depth(amqp, messages_queues(settings)) == 0


async def test_control_characters_are_dropped_from_a_customers_text_but_not_line_breaks(
    client: Client, amqp: AbstractChannel, settings: Settings, webhook_url: Callable[[str], str]
) -> None:
    body = Customer().says("ул.\u0000 Ленина\u001b 5\n\tкв. 3\u007f\u009f")
    response = await client.post(webhook_url(""), json=body)

    assert response.status == 200
    [message] = await take_all(amqp, messages_queues(settings))
    assert decode(InboundMessage, message.body).text == "ул. Ленина 5\n\tкв. 3"


async def test_control_characters_are_dropped_from_a_twilio_body(
    client: Client, amqp: AbstractChannel, settings: Settings
) -> None:
    response = await post(client, WhatsAppCustomer().says("да\u0000\u0007"))

    assert response.status == 200
    [message] = await take_all(amqp, messages_queues(settings))
    assert decode(InboundMessage, message.body).text == "да"
