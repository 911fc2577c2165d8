"""A lunchtime burst: many customers of one business at once are all answered 2xx and
all answered by the bot. The queue is the buffer; no per-business limit refuses any."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from tests.support.customers import Customer, expected_replies
from tests.support.fake_provider import FakeChat2Desk

Client = TestClient[Any, Any]
CUSTOMERS = 120


async def test_120_customers_within_seconds_are_all_accepted_and_answered(
    client: Client,
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    webhook_url: Callable[[str], str],
) -> None:
    customers = [Customer() for _ in range(CUSTOMERS)]

    async def post(customer: Customer) -> int:
        response = await client.post(webhook_url(""), json=customer.says("Привет"))
        return response.status

    statuses = await asyncio.gather(*(post(c) for c in customers))
    await fake.wait_for(lambda: all(fake.texts_for(c.client_id) for c in customers), timeout=60)

    greeting = expected_replies(["Привет"])
    assert statuses == [200] * CUSTOMERS
    assert all(fake.texts_for(c.client_id) == greeting for c in customers)
