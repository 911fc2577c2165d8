"""A Twilio customer asking for a person: Twilio has no operators of its own, so
HANDOFF_NOTIFY_URL is told, and the bot goes silent for the customer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from dialog import Lang, handing_over
from orderbot.config.settings import Settings
from orderbot.conversation.keys import Keys
from tests.support.fake_provider import FakeChat2Desk
from tests.support.recovery import poll
from tests.support.twilio import WhatsAppCustomer, post


@pytest.fixture
def config(config: dict[str, str], fake: FakeChat2Desk) -> dict[str, str]:
    return {**config, "HANDOFF_NOTIFY_URL": f"{fake.url}/handoff-notify"}


async def test_a_twilio_customer_asking_for_a_person_is_announced_to_the_notify_url(
    client: TestClient[Any, Any],
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    redis: Redis,
    settings: Settings,
) -> None:
    customer = WhatsAppCustomer()
    request = customer.says("Operator")

    assert (await post(client, request)).status == 200
    await fake.wait_for(lambda: len(fake.handoff_notes) == 1)

    [note] = fake.handoff_notes
    assert note["provider"] == "twilio"
    assert note["tenant"] == settings.tenant
    assert note["client_id"] == customer.number
    assert note["message_id"] == request["MessageSid"]
    assert note["text"] == "Operator"
    assert fake.texts_for(customer.number) == [handing_over(Lang.EN)]
    assert fake.transfers == []


async def test_a_handed_off_twilio_customer_is_not_answered(
    client: TestClient[Any, Any],
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    redis: Redis,
    settings: Settings,
) -> None:
    customer = WhatsAppCustomer()
    assert (await post(client, customer.says("человек"))).status == 200
    keys = Keys(settings.redis_key_prefix)
    handoff = keys.handoff(f"{settings.tenant}:twilio:{customer.number}")
    await poll(lambda: redis.exists(handoff))
    later = customer.says("ул. Киевская 95, кв 12")

    assert (await post(client, later)).status == 200

    marker = keys.processed_of(f"{settings.tenant}:twilio:{customer.number}", later["MessageSid"])
    await poll(lambda: redis.exists(marker))
    assert fake.texts_for(customer.number) == [handing_over(Lang.RU)]
