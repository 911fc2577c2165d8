"""A customer who writes faster than anyone types is never refused: past their budget
(WEBHOOK_RATE_LIMIT_CUSTOMER a minute) the messages are kept in the held queue (not the DLQ:
nothing failed), findable and replayable, and the customer is told to slow down once a
minute. Re-posts do not use up the budget."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel
from aiohttp.test_utils import TestClient

from dialog import Lang, slow_down
from orderbot.amqp.dlq import list_parked, replay
from orderbot.amqp.link import BrokerLink
from orderbot.config.settings import Settings
from tests.support.broker_tools import depth, messages_queues, wait_depth
from tests.support.customers import Customer
from tests.support.fake_provider import FakeChat2Desk

Client = TestClient[Any, Any]
BUDGET = 5


@pytest.fixture
def config(config: dict[str, str]) -> dict[str, str]:
    return {**config, "WEBHOOK_RATE_LIMIT_CUSTOMER": str(BUDGET)}


async def test_a_flood_is_answered_2xx_kept_in_the_dlq_and_told_to_slow_down_once(
    client: Client,
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    amqp: AbstractChannel,
    settings: Settings,
    webhook_url: Callable[[str], str],
) -> None:
    flooder = Customer()
    statuses = [
        (await client.post(webhook_url(""), json=flooder.says(f"пишу {i}"))).status
        for i in range(60)
    ]
    async with asyncio.timeout(60):
        while await depth(amqp, messages_queues(settings)) > 0:
            await asyncio.sleep(0.05)
    await fake.wait_for(lambda: slow_down(Lang.RU) in fake.texts_for(flooder.client_id))

    async with BrokerLink(settings, "test") as broker:
        parked = await list_parked(broker, held=True)
    assert statuses == [200] * 60
    assert all(p.reason.startswith("the customer sent more than") for p in parked)
    assert len(parked) >= 60 - 2 * BUDGET  # a token or two may refill during the test
    assert fake.texts_for(flooder.client_id).count(slow_down(Lang.RU)) == 1


async def test_a_replayed_flood_message_is_applied_past_the_budget(
    client: Client,
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    amqp: AbstractChannel,
    settings: Settings,
    webhook_url: Callable[[str], str],
) -> None:
    flooder = Customer()
    for i in range(BUDGET + 1):
        await client.post(webhook_url(""), json=flooder.says(f"привет {i}"))
    await wait_depth(amqp, settings.queue("held"), 1)
    replies_before = len(fake.texts_for(flooder.client_id))

    async with BrokerLink(settings, "test") as broker:
        [parked] = await list_parked(broker, held=True)
        assert await replay(broker, message_id=parked.message_id, held=True) == 1
    await fake.wait_for(lambda: len(fake.texts_for(flooder.client_id)) > replies_before)

    assert await depth(amqp, settings.queue("held")) == 0


async def test_a_reposted_message_does_not_use_up_the_budget(
    client: Client,
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    amqp: AbstractChannel,
    settings: Settings,
    webhook_url: Callable[[str], str],
) -> None:
    customer = Customer()
    greeting = customer.says("Привет", message_id=f"{customer.client_id}-same")
    for _ in range(3 * BUDGET):
        assert (await client.post(webhook_url(""), json=greeting)).status == 200
    address = customer.says("ул. Киевская 95, кв. 12")
    assert (await client.post(webhook_url(""), json=address)).status == 200
    await fake.wait_for(lambda: len(fake.texts_for(customer.client_id)) >= 2)
    async with asyncio.timeout(30):
        while await depth(amqp, messages_queues(settings)) > 0:
            await asyncio.sleep(0.05)

    assert await depth(amqp, settings.queue("held")) == 0
    assert slow_down(Lang.RU) not in fake.texts_for(customer.client_id)
