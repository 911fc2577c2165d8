"""Twilio's form before and after its signature: the signature binds the concatenation
of names and values, not the pairs, so the ids must have Twilio's exact shape (a signed
form cannot be re-cut into another message that still verifies); and a form is bounded
before anything parses it."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
from aio_pika.abc import AbstractChannel
from aiohttp.test_utils import TestClient
from twilio.request_validator import RequestValidator

from orderbot.config.settings import Settings
from tests.support.broker_tools import depth, messages_queues
from tests.support.credentials import TWILIO_TOKEN
from tests.support.twilio import URL, WhatsAppCustomer, post, signed

Client = TestClient[Any, Any]


async def test_a_signed_form_re_cut_into_a_new_message_id_is_refused(
    client: Client, amqp: AbstractChannel, settings: Settings
) -> None:
    original = WhatsAppCustomer().says("yes")
    headers = signed(original)
    re_cut = {k: v for k, v in original.items() if k != "NumMedia"}
    re_cut["MessageSid"] += "NumMedia" + original["NumMedia"]
    # Still signed as far as Twilio's own validator can tell.
    assert RequestValidator(TWILIO_TOKEN).validate(URL, re_cut, headers["X-Twilio-Signature"])

    first = await client.post("/webhook/twilio", data=urlencode(original), headers=headers)
    again = await client.post("/webhook/twilio", data=urlencode(re_cut), headers=headers)

    assert first.status == 200
    assert again.status == 422
    assert [p["field"] for p in (await again.json())["detail"]] == ["MessageSid"]
    assert await depth(amqp, messages_queues(settings)) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("MessageSid", "SM" + "0" * 31),
        ("MessageSid", "SM" + "0" * 33),
        ("MessageSid", "XX" + "0" * 32),
        ("MessageSid", "SM" + "g" * 32),
        ("SmsSid", "SM" + "0" * 32 + "To"),
        ("AccountSid", "AC" + "0" * 32 + "Body"),
        ("MessagingServiceSid", "MG" + "0" * 31),
    ],
)
async def test_ids_not_of_twilios_shape_are_422(
    client: Client, amqp: AbstractChannel, settings: Settings, field: str, value: str
) -> None:
    response = await post(client, {**WhatsAppCustomer().says("hi"), field: value})
    assert response.status == 422
    assert [p["field"] for p in (await response.json())["detail"]] == [field]
    assert await depth(amqp, messages_queues(settings)) == 0


async def test_media_messages_and_service_ids_of_twilios_shape_are_queued(
    client: Client,
) -> None:
    form = {
        **WhatsAppCustomer().says("hi"),
        "MessagingServiceSid": "MG" + "a" * 32,
    }
    form["MessageSid"] = "MM" + form["MessageSid"][2:]
    form["SmsSid"] = form["MessageSid"]
    response = await post(client, form)
    assert response.status == 200


async def test_a_form_of_too_many_fields_is_413_before_anything_else(client: Client) -> None:
    blank = await client.post(
        "/webhook/twilio",
        data=b"&" * 120_000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    form = WhatsAppCustomer().says("hi")
    padded = {**form, **{f"X{n}": "" for n in range(300)}}
    signed_padded = await post(client, padded)

    assert blank.status == 413
    assert await blank.json() == {"error": "too many form fields"}
    assert signed_padded.status == 413


async def test_a_form_with_ten_media_and_its_usual_fields_is_served(client: Client) -> None:
    form = WhatsAppCustomer().says("hi")
    form["NumMedia"] = "10"
    for n in range(10):
        form[f"MediaUrl{n}"] = f"https://api.twilio.com/media/{n}"
        form[f"MediaContentType{n}"] = "image/jpeg"
    response = await post(client, form)
    assert response.status == 200
