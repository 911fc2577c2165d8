"""The hand-off to a person through server, broker, worker and Redis, against the fake
Chat2Desk: asked for by the customer, taken by an operator writing, given back when
Chat2Desk closes the dialog; the bot's own messages coming back never count as an
operator's."""

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
from orderbot.envelopes import Conversation
from tests.support.customers import Customer, converse, expected_replies, poster
from tests.support.fake_provider import FakeChat2Desk
from tests.support.recovery import poll

GROUP = "555"
Post = Callable[[dict[str, Any]], Any]


@pytest.fixture
def config(config: dict[str, str]) -> dict[str, str]:
    return {**config, "CHAT2DESK_OPERATOR_GROUP_ID": GROUP}


def _conversation(settings: Settings, customer: Customer) -> Conversation:
    return Conversation(tenant=settings.tenant, provider="chat2desk", client_id=customer.client_id)


def _handoff_key(settings: Settings, customer: Customer) -> str:
    return Keys(settings.redis_key_prefix).handoff(_conversation(settings, customer).key)


def _processed_key(settings: Settings, customer: Customer, message_id: str) -> str:
    customer_key = _conversation(settings, customer).key
    return Keys(settings.redis_key_prefix).processed_of(customer_key, message_id)


async def _says_unanswered(
    post: Post,
    fake: FakeChat2Desk,
    redis: Redis,
    settings: Settings,
    customer: Customer,
    text: str,
) -> None:
    """The customer writes; the message is applied (its marker is written after any
    reply would have been sent) and nothing was said to them."""
    before = fake.texts_for(customer.client_id)
    hook = customer.says(text)
    assert await post(hook) == 200
    await poll(lambda: redis.exists(_processed_key(settings, customer, hook["message_id"])))
    assert fake.texts_for(customer.client_id) == before


async def test_a_customer_asking_for_a_person_is_told_so_and_transferred_to_the_group(
    client: TestClient[Any, Any],
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    redis: Redis,
    settings: Settings,
    webhook_url: Callable[[str], str],
) -> None:
    customer = Customer()
    post = poster(client, webhook_url(""))
    await converse(post, fake, customer, ["Здравствуйте"])
    request = customer.says("Оператор!")

    assert await post(request) == 200
    await fake.wait_for(lambda: len(fake.transfers) == 1)

    [transfer] = fake.transfers
    assert transfer.message_id == request["message_id"]
    assert transfer.group_id == GROUP
    assert transfer.authorization == settings.chat2desk_api_token.get_secret_value()  # type: ignore[union-attr]
    assert fake.texts_for(customer.client_id)[-1] == handing_over(Lang.RU)


async def test_a_handed_off_customer_is_not_answered_and_their_dialog_stays(
    client: TestClient[Any, Any],
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    redis: Redis,
    settings: Settings,
    webhook_url: Callable[[str], str],
) -> None:
    customer = Customer()
    post = poster(client, webhook_url(""))
    await converse(post, fake, customer, ["Здравствуйте", "operator"])
    await poll(lambda: redis.exists(_handoff_key(settings, customer)))
    dialog_key = Keys(settings.redis_key_prefix).dialog(_conversation(settings, customer))
    state_before = await redis.get(dialog_key)

    await _says_unanswered(post, fake, redis, settings, customer, "ул. Киевская 95, кв 12")

    assert await redis.get(dialog_key) == state_before


async def test_an_operators_message_silences_the_bot(
    client: TestClient[Any, Any],
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    redis: Redis,
    settings: Settings,
    webhook_url: Callable[[str], str],
) -> None:
    customer = Customer()
    post = poster(client, webhook_url(""))
    await converse(post, fake, customer, ["Здравствуйте"])

    assert await post(customer.operator_writes("Добрый день!", message_id=987654321)) == 200
    await poll(lambda: redis.exists(_handoff_key(settings, customer)))

    await _says_unanswered(post, fake, redis, settings, customer, "ул. Киевская 95, кв 12")


async def test_the_bots_own_messages_coming_back_do_not_silence_it(
    client: TestClient[Any, Any],
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    redis: Redis,
    settings: Settings,
    webhook_url: Callable[[str], str],
) -> None:
    customer = Customer()
    post = poster(client, webhook_url(""))
    texts = ["Здравствуйте", "ул. Киевская 95, кв 12"]
    await converse(post, fake, customer, texts[:1])
    [greeting_id] = fake.sent_ids_for(customer.client_id)
    greeting = fake.texts_for(customer.client_id)[0]

    # Chat2Desk sends our own reply back as an `outbox` hook, operator id and all.
    assert await post(customer.operator_writes(greeting, message_id=greeting_id)) == 200
    await converse(post, fake, customer, texts[1:])

    assert fake.texts_for(customer.client_id) == expected_replies(texts)
    assert not await redis.exists(_handoff_key(settings, customer))


async def test_a_closed_dialog_gives_the_conversation_back_to_the_bot(
    client: TestClient[Any, Any],
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    redis: Redis,
    settings: Settings,
    webhook_url: Callable[[str], str],
) -> None:
    customer = Customer()
    post = poster(client, webhook_url(""))
    texts = ["Здравствуйте", "ул. Киевская 95, кв 12"]
    await converse(post, fake, customer, texts[:1])
    assert await post(customer.operator_writes("Добрый день!", message_id=987654322)) == 200
    await poll(lambda: redis.exists(_handoff_key(settings, customer)))

    assert await post(customer.dialog_closed()) == 200
    await poll(lambda: _gone(redis, _handoff_key(settings, customer)))
    await converse(post, fake, customer, texts[1:])

    assert fake.texts_for(customer.client_id) == expected_replies(texts)


async def _gone(redis: Redis, key: str) -> bool:
    return not await redis.exists(key)


async def test_a_reply_the_outbox_sent_coming_back_does_not_silence_the_bot(
    client: TestClient[Any, Any],
    worker: asyncio.Task[None],
    outbox_worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    redis: Redis,
    settings: Settings,
    webhook_url: Callable[[str], str],
) -> None:
    customer = Customer()
    post = poster(client, webhook_url(""))
    texts = ["Здравствуйте", "ул. Киевская 95, кв 12"]
    fake.fail_next(*[500] * settings.send_attempts)  # the greeting goes to the outbox
    await converse(post, fake, customer, texts[:1])
    [greeting_id] = fake.sent_ids_for(customer.client_id)
    greeting = fake.texts_for(customer.client_id)[0]

    assert await post(customer.operator_writes(greeting, message_id=greeting_id)) == 200
    await converse(post, fake, customer, texts[1:])

    assert fake.texts_for(customer.client_id) == expected_replies(texts)
    assert len(fake.attempts) > len(fake.received)  # the greeting did fail inline


async def test_a_refused_transfer_still_hands_the_conversation_off(
    client: TestClient[Any, Any],
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    redis: Redis,
    settings: Settings,
    webhook_url: Callable[[str], str],
) -> None:
    customer = Customer()
    post = poster(client, webhook_url(""))
    fake.transfer_statuses.append(403)  # e.g. a group id of another account

    await converse(post, fake, customer, ["оператор"])
    await poll(lambda: redis.exists(_handoff_key(settings, customer)))

    assert len(fake.transfers) == 1  # a refusal is not retried
    assert fake.texts_for(customer.client_id) == [handing_over(Lang.RU)]
