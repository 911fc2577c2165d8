"""The words and forms people use, through server, broker, worker, Redis and PostgreSQL:
phones typed any way, yes and no as people say them, a shared location for the address
and a photo where the address was asked."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from dialog import Lang
from dialog.texts import Msg, render
from tests.support.customers import Customer, answer, converse, poster
from tests.support.fake_provider import FakeChat2Desk

ADDRESS = "ул. Киевская 95, кв 12"


@pytest.mark.parametrize(
    ("typed", "yes"),
    [
        ("0555 123 456", "+"),
        ("555123456", "yeah"),
        ("+996 (555) 12-34-56", "yep"),
        ("996-555-123-456", "correct"),
    ],
)
async def test_a_phone_typed_any_way_and_confirmed_any_way_is_stored_in_e164(
    client: TestClient[Any, Any],
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    db: asyncpg.Connection,
    webhook_url: Callable[[str], str],
    typed: str,
    yes: str,
) -> None:
    customer = Customer()
    await converse(
        poster(client, webhook_url("")), fake, customer, ["Привет", ADDRESS, typed, "2", yes]
    )

    phones = await db.fetch(
        "SELECT client_phone FROM orders WHERE client_id = $1", customer.client_id
    )
    assert [row["client_phone"] for row in phones] == ["+996555123456"]


async def test_nope_at_the_summary_places_no_order(
    client: TestClient[Any, Any],
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    db: asyncpg.Connection,
    webhook_url: Callable[[str], str],
) -> None:
    customer = Customer()
    texts = ["Hello", "12 Chui Avenue, apt 5", "0555 123 456", "2", "nope"]
    await converse(poster(client, webhook_url("")), fake, customer, texts)

    orders = await db.fetchval(
        "SELECT count(*) FROM orders WHERE client_id = $1", customer.client_id
    )
    assert orders == 0
    assert fake.texts_for(customer.client_id)[-1] == render(Msg.STARTING_OVER, Lang.EN)


async def test_a_location_pin_completes_the_address_step(
    client: TestClient[Any, Any],
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    db: asyncpg.Connection,
    webhook_url: Callable[[str], str],
) -> None:
    customer = Customer()
    post = poster(client, webhook_url(""))
    await converse(post, fake, customer, ["Привет"])
    await answer(post, fake, customer, customer.shares_location(42.874621, 74.569762))
    await converse(post, fake, customer, ["0555 123 456", "2"])
    summary = fake.texts_for(customer.client_id)[-1]
    await converse(post, fake, customer, ["да"])

    assert "https://www.openstreetmap.org/?mlat=42.874621&mlon=74.569762" in summary
    order = await db.fetchrow(
        "SELECT delivery_address, latitude, longitude FROM orders WHERE client_id = $1",
        customer.client_id,
    )
    assert order is not None
    assert dict(order) == {
        "delivery_address": "42.874621, 74.569762",
        "latitude": 42.874621,
        "longitude": 74.569762,
    }


async def test_a_photo_at_the_address_step_is_asked_to_be_typed_and_kept_with_the_order(
    client: TestClient[Any, Any],
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    db: asyncpg.Connection,
    webhook_url: Callable[[str], str],
) -> None:
    customer = Customer()
    post = poster(client, webhook_url(""))
    photo = "https://storage.chat2desk.example/photos/door.jpg"
    await converse(post, fake, customer, ["Привет"])

    reply = await answer(post, fake, customer, customer.sends_photo(photo))
    await converse(post, fake, customer, [ADDRESS, "0555 123 456", "2", "да"])

    assert reply == render(Msg.PLEASE_TYPE_ADDRESS, Lang.RU)
    kept = await db.fetchval(
        "SELECT attachments FROM orders WHERE client_id = $1", customer.client_id
    )
    assert (
        kept
        == '[{"url": "https://storage.chat2desk.example/photos/door.jpg", "content_type": "image"}]'
    )
