"""The bot takes a handed-off conversation back after HANDOFF_TTL of operator silence,
and each operator message starts that silence again. A short TTL, and polling for the
hand-off's mark to go, instead of waiting the TTL out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from dialog import Lang, handing_over
from orderbot.config.settings import Settings
from orderbot.conversation.keys import Keys
from tests.support.customers import Customer, converse, expected_replies, poster
from tests.support.fake_provider import FakeChat2Desk
from tests.support.recovery import poll

TTL_MS = 2000


@pytest.fixture
def config(config: dict[str, str]) -> dict[str, str]:
    return {**config, "HANDOFF_TTL": f"{TTL_MS}ms", "CHAT2DESK_OPERATOR_GROUP_ID": "555"}


def _handoff_key(settings: Settings, customer: Customer) -> str:
    return Keys(settings.redis_key_prefix).handoff(
        f"{settings.tenant}:chat2desk:{customer.client_id}"
    )


async def test_the_bot_answers_again_after_the_hand_off_ttl(
    client: TestClient[Any, Any],
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    redis: Redis,
    settings: Settings,
    webhook_url: Callable[[str], str],
) -> None:
    customer = Customer()
    post = poster(client, webhook_url(""))
    await converse(post, fake, customer, ["Здравствуйте", "оператор"])
    key = _handoff_key(settings, customer)
    await poll(lambda: redis.exists(key))  # the reply goes out before the mark is set

    await poll(lambda: _gone(redis, key), timeout=TTL_MS / 1000 + 10)
    await converse(post, fake, customer, ["ул. Киевская 95, кв 12"])

    [greeting, handing, address_answer] = fake.texts_for(customer.client_id)
    assert handing == handing_over(Lang.RU)
    # The dialog goes on where it was before the hand-off.
    assert [greeting, address_answer] == expected_replies(
        ["Здравствуйте", "ул. Киевская 95, кв 12"]
    )


async def test_each_operator_message_starts_the_silence_again(
    client: TestClient[Any, Any],
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    redis: Redis,
    settings: Settings,
    webhook_url: Callable[[str], str],
) -> None:
    customer = Customer()
    post = poster(client, webhook_url(""))
    key = _handoff_key(settings, customer)
    assert await post(customer.operator_writes("Добрый день!", message_id=700001)) == 200
    await poll(lambda: _ttl_below(redis, key, TTL_MS // 2))

    assert await post(customer.operator_writes("Уточню заказ", message_id=700002)) == 200

    await poll(lambda: _ttl_above(redis, key, TTL_MS // 2))


async def _gone(redis: Redis, key: str) -> bool:
    return not await redis.exists(key)


async def _ttl_below(redis: Redis, key: str, ms: int) -> bool:
    ttl: int = await redis.pttl(key)
    return 0 < ttl < ms


async def _ttl_above(redis: Redis, key: str, ms: int) -> bool:
    ttl: int = await redis.pttl(key)
    return ttl > ms
