"""Locations and media at the edge: Chat2Desk's `coordinates`, `photo` and
`attachments`, Twilio's `Latitude`/`Longitude` and `MediaUrl{n}`, carried in the queued
message; a shape the edge cannot read never costs the customer's message."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from aio_pika.abc import AbstractChannel
from aiohttp.test_utils import TestClient

from orderbot.config.settings import Settings
from orderbot.envelopes import Attachment, InboundMessage, Location, decode
from server.chat2desk import attachments, location
from tests.support.broker_tools import messages_queues, take_all
from tests.support.customers import Customer
from tests.support.fake_provider import FakeChat2Desk
from tests.support.twilio import WhatsAppCustomer, post

Client = TestClient[Any, Any]
PHOTO = "https://storage.chat2desk.example/photo.jpg"


@pytest.mark.parametrize(
    "coordinates",
    [
        "42.8746,74.5698",
        "42.8746, 74.5698",
        "42.8746 74.5698",
        [42.8746, 74.5698],
        {"latitude": 42.8746, "longitude": 74.5698},
        {"lat": "42.8746", "lng": "74.5698"},
    ],
)
def test_chat2desk_coordinates_in_any_plausible_shape_are_a_pin(coordinates: object) -> None:
    assert location({"coordinates": coordinates}) == Location(latitude=42.8746, longitude=74.5698)


@pytest.mark.parametrize(
    "coordinates", [None, "", "here", "91,0", [1], {"lat": 1}, True, "nan,nan", "1,2,3"]
)
def test_chat2desk_coordinates_that_read_as_no_point_are_no_pin(coordinates: object) -> None:
    assert location({"coordinates": coordinates}) is None


def test_chat2desk_media_fields_and_attachments_are_links() -> None:
    body = {
        "photo": PHOTO,
        "audio": "https://storage.chat2desk.example/voice.ogg",
        "pdf": None,
        "attachments": [
            {"link": PHOTO},
            {"link": "https://storage.chat2desk.example/menu.pdf", "type": "application/pdf"},
            "https://storage.chat2desk.example/plain.png",
            {"link": "javascript:alert(1)"},
            {"name": "no link"},
            42,
        ],
    }

    assert attachments(body) == (
        Attachment(url=PHOTO, content_type="image"),
        Attachment(url="https://storage.chat2desk.example/voice.ogg", content_type="audio"),
        Attachment(
            url="https://storage.chat2desk.example/menu.pdf", content_type="application/pdf"
        ),
        Attachment(url="https://storage.chat2desk.example/plain.png"),
    )


async def test_a_chat2desk_location_and_photo_travel_with_the_queued_message(
    client: Client, amqp: AbstractChannel, settings: Settings, webhook_url: Callable[[str], str]
) -> None:
    body = {**Customer().says(""), "coordinates": "42.8746,74.5698", "photo": PHOTO}

    response = await client.post(webhook_url(""), json=body)

    assert response.status == 200
    [queued] = await take_all(amqp, messages_queues(settings))
    message = decode(InboundMessage, queued.body)
    assert message.location == Location(latitude=42.8746, longitude=74.5698)
    assert message.attachments == (Attachment(url=PHOTO, content_type="image"),)


async def test_chat2desk_media_of_another_shape_still_queues_the_message(
    client: Client, amqp: AbstractChannel, settings: Settings, webhook_url: Callable[[str], str]
) -> None:
    body = {**Customer().says("hi"), "coordinates": {"x": []}, "attachments": "none", "photo": 7}

    response = await client.post(webhook_url(""), json=body)

    assert response.status == 200
    [queued] = await take_all(amqp, messages_queues(settings))
    message = decode(InboundMessage, queued.body)
    assert (message.text, message.location, message.attachments) == ("hi", None, ())


async def test_a_twilio_location_message_is_queued_with_its_pin(
    client: Client, amqp: AbstractChannel, settings: Settings
) -> None:
    form = WhatsAppCustomer().says("")
    form |= {"Latitude": "42.8746", "Longitude": "74.5698", "Address": "Ala-Too Square"}

    response = await post(client, form)

    assert response.status == 200
    [queued] = await take_all(amqp, messages_queues(settings))
    assert decode(InboundMessage, queued.body).location == Location(
        latitude=42.8746, longitude=74.5698, label="Ala-Too Square"
    )


async def test_twilio_media_are_queued_as_links_with_their_types(
    client: Client, amqp: AbstractChannel, settings: Settings
) -> None:
    form = WhatsAppCustomer().says("")
    form |= {
        "NumMedia": "2",
        "MediaUrl0": "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1",
        "MediaContentType0": "image/jpeg",
        "MediaUrl1": "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME2",
        "MediaContentType1": "audio/ogg",
    }

    response = await post(client, form)

    assert response.status == 200
    [queued] = await take_all(amqp, messages_queues(settings))
    assert [a.content_type for a in decode(InboundMessage, queued.body).attachments] == [
        "image/jpeg",
        "audio/ogg",
    ]


async def test_a_whatsapp_pin_through_twilio_is_the_orders_address(
    client: Client, worker: asyncio.Task[None], fake: FakeChat2Desk, db: asyncpg.Connection
) -> None:
    customer = WhatsAppCustomer()
    pin = {"Latitude": "42.8746", "Longitude": "74.5698", "Label": "Ala-Too Square"}
    forms = [
        customer.says("Здравствуйте"),
        customer.says("") | pin,
        *(customer.says(text) for text in ("0555 123 456", "2", "да")),
    ]
    for count, form in enumerate(forms, start=1):
        assert (await post(client, form)).status == 200
        await fake.wait_for(lambda n=count: len(fake.texts_for(customer.number)) >= n)

    order = await db.fetchrow(
        "SELECT delivery_address, latitude, longitude FROM orders WHERE client_id = $1",
        customer.number,
    )
    assert order is not None
    assert dict(order) == {
        "delivery_address": "Ala-Too Square",
        "latitude": 42.8746,
        "longitude": 74.5698,
    }
