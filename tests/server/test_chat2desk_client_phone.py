"""The client's phone from a Chat2Desk hook: carried to the dialog when plausible, and
never a reason to refuse the message."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel
from aiohttp.test_utils import TestClient

from orderbot.config.settings import Settings
from orderbot.envelopes import InboundMessage, decode
from server.chat2desk import client_phone
from tests.support.broker_tools import messages_queues, take_all
from tests.support.customers import Customer

Client = TestClient[Any, Any]


@pytest.mark.parametrize(
    ("client", "phone"),
    [
        ({"phone": "+996555123456", "client_phone": None}, "+996555123456"),
        ({"phone": "996555123456", "client_phone": "0700 123 456"}, "0700 123 456"),
        ({"phone": 996555123456}, "996555123456"),
        ({"phone": "[chat] 1d0bb2e221762cfcc05c"}, "[chat] 1d0bb2e221762cfcc05c"),
    ],
)
def test_the_operator_entered_phone_wins_over_the_messenger_id(
    client: dict[str, Any], phone: str
) -> None:
    assert client_phone({"client": client}) == phone


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"client": None},
        {"client": ["+996555123456"]},
        {"client": {"phone": True}},
        {"client": {"phone": {"nested": 1}}},
        {"client": {"phone": "9" * 33}},
        {"client": {"phone": "+996\n555"}},
        {"client": {"phone": ""}},
    ],
)
def test_a_missing_or_odd_client_object_gives_no_phone(body: dict[str, Any]) -> None:
    assert client_phone(body) is None


async def test_the_client_phone_travels_with_the_queued_message(
    client: Client, amqp: AbstractChannel, settings: Settings, webhook_url: Callable[[str], str]
) -> None:
    response = await client.post(webhook_url(""), json=Customer().says("hello"))

    assert response.status == 200
    [message] = await take_all(amqp, messages_queues(settings))
    assert decode(InboundMessage, message.body).own_phone == "+996555123456"


async def test_a_client_object_of_another_shape_still_queues_the_message(
    client: Client, amqp: AbstractChannel, settings: Settings, webhook_url: Callable[[str], str]
) -> None:
    body = {**Customer().says("hello"), "client": "not an object"}

    response = await client.post(webhook_url(""), json=body)

    assert response.status == 200
    [message] = await take_all(amqp, messages_queues(settings))
    assert decode(InboundMessage, message.body).own_phone is None
