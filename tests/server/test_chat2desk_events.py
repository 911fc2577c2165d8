"""Chat2Desk's operator messages and closed dialogs reach the worker as events of the
customer's conversation, in the customer's partition; the edge only reads and queues."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aio_pika.abc import AbstractChannel
from aiohttp.test_utils import TestClient

from orderbot.amqp.topology import Topology
from orderbot.config.settings import Settings
from orderbot.envelopes import ConversationEvent, decode_queued
from tests.support.broker_tools import depth, messages_queues, take_all
from tests.support.customers import Customer

Client = TestClient[Any, Any]


def _partition(settings: Settings, customer: Customer) -> str:
    return Topology.from_settings(settings).messages_for(f"default:chat2desk:{customer.client_id}")


async def test_an_operators_message_is_queued_as_an_event_of_the_conversation(
    client: Client, amqp: AbstractChannel, settings: Settings, webhook_url: Callable[[str], str]
) -> None:
    customer = Customer()
    hook = customer.operator_writes("Здравствуйте, я Айгуль", message_id=106773577)

    response = await client.post(webhook_url(""), json=hook)

    assert response.status == 200
    assert await response.json() == {"status": "queued"}
    [message] = await take_all(amqp, _partition(settings, customer))
    event = decode_queued(message.body)
    assert isinstance(event, ConversationEvent)
    assert event.event == "operator_message"
    assert event.message_id == "106773577"
    assert event.operator_id == "41164"
    assert event.conversation.client_id == customer.client_id
    assert message.message_id == "outbox:106773577"


async def test_a_message_to_the_client_without_an_operator_is_acknowledged_unqueued(
    client: Client, amqp: AbstractChannel, settings: Settings, webhook_url: Callable[[str], str]
) -> None:
    customer = Customer()
    hook = customer.operator_writes("Рассылка", message_id=5, operator_id=None)

    response = await client.post(webhook_url(""), json=hook)

    assert response.status == 200
    assert await response.json() == {"status": "ignored"}
    assert await depth(amqp, _partition(settings, customer)) == 0


async def test_a_closed_dialog_is_queued_as_an_event_of_the_conversation(
    client: Client, amqp: AbstractChannel, settings: Settings, webhook_url: Callable[[str], str]
) -> None:
    customer = Customer()

    response = await client.post(webhook_url(""), json=customer.dialog_closed())

    assert response.status == 200
    [message] = await take_all(amqp, _partition(settings, customer))
    event = decode_queued(message.body)
    assert isinstance(event, ConversationEvent)
    assert event.event == "dialog_closed"
    assert event.dialog_id == "77"
    assert event.conversation.client_id == customer.client_id


async def test_a_closed_dialog_naming_no_client_is_acknowledged_unqueued(
    client: Client, amqp: AbstractChannel, settings: Settings, webhook_url: Callable[[str], str]
) -> None:
    response = await client.post(webhook_url(""), json={"hook_type": "close_dialog", "id": 9})

    assert response.status == 200
    assert await response.json() == {"status": "ignored"}
    assert await depth(amqp, messages_queues(settings)) == 0


async def test_blank_fields_of_an_operators_message_read_as_absent(
    client: Client, amqp: AbstractChannel, settings: Settings, webhook_url: Callable[[str], str]
) -> None:
    customer = Customer()
    hook = {**customer.operator_writes("Добрый день", message_id=8), "dialog_id": ""}

    response = await client.post(webhook_url(""), json=hook)

    assert await response.json() == {"status": "queued"}
    [message] = await take_all(amqp, _partition(settings, customer))
    event = decode_queued(message.body)
    assert isinstance(event, ConversationEvent)
    assert event.dialog_id is None
