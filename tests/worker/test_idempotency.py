"""Guarantee 2: a re-posted or redelivered message changes the dialog at most once
and creates at most one order."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from aio_pika.abc import AbstractChannel
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from dialog import DialogState, Lang
from orderbot.config.settings import Settings
from orderbot.conversation.batch import RedisBatch, batch_for
from orderbot.conversation.dialog_store import Begun, DialogStore
from orderbot.conversation.keys import Keys
from orderbot.conversation.locks import ClientLocks
from orderbot.conversation.owed_ratings import OwedRating, OwedRatings
from orderbot.envelopes import Conversation, InboundMessage
from tests.support.broker_tools import messages_queues, publish_raw
from tests.support.customers import HAPPY_PATH_RU, Customer, converse, expected_replies, poster
from tests.support.dialogs import dialog_state, envelope
from tests.support.fake_provider import FakeChat2Desk
from tests.support.recovery import poll
from tests.support.services import Services


async def test_same_webhook_posted_three_times_is_one_step_and_one_reply(
    client: TestClient[Any, Any],
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    redis: Redis,
    settings: Settings,
    webhook_url: Callable[[str], str],
) -> None:
    customer = Customer()
    body = customer.says("Здравствуйте", message_id=f"{customer.client_id}-dup")
    statuses = [(await client.post(webhook_url(""), json=body)).status for _ in range(3)]
    # One worker handles a customer's messages in arrival order, so by the time the
    # later message is answered every copy of the first one has been handled.
    later = customer.says("ул. Киевская 95")
    await client.post(webhook_url(""), json=later)
    expected = expected_replies(["Здравствуйте", "ул. Киевская 95"])
    await fake.wait_for(lambda: len(fake.texts_for(customer.client_id)) >= len(expected))
    # The reply goes out before the step commits: wait for the commit's marker.
    customer_key = f"{settings.tenant}:chat2desk:{customer.client_id}"
    marker = Keys(settings.redis_key_prefix).processed_of(customer_key, later["message_id"])
    await poll(lambda: redis.exists(marker))

    assert statuses == [200, 200, 200]
    assert fake.texts_for(customer.client_id) == expected
    assert (await dialog_state(redis, settings, customer)).turns == 2


async def test_redelivered_message_is_applied_once(
    client: TestClient[Any, Any],
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    amqp: AbstractChannel,
    redis: Redis,
    settings: Settings,
    webhook_url: Callable[[str], str],
) -> None:
    customer = Customer()
    body = envelope(settings, customer, "Hello", f"{customer.client_id}-redelivered")
    for _ in range(3):  # past the server's edge dedupe, as broker redeliveries would be
        await publish_raw(amqp, messages_queues(settings), body, message_id="same")
    later = customer.says("Main street 1")
    await client.post(webhook_url(""), json=later)
    expected = expected_replies(["Hello", "Main street 1"])
    await fake.wait_for(lambda: len(fake.texts_for(customer.client_id)) >= len(expected))
    # The reply goes out before the step commits: wait for the commit's marker.
    customer_key = f"{settings.tenant}:chat2desk:{customer.client_id}"
    marker = Keys(settings.redis_key_prefix).processed_of(customer_key, later["message_id"])
    await poll(lambda: redis.exists(marker))

    assert fake.texts_for(customer.client_id) == expected
    assert (await dialog_state(redis, settings, customer)).turns == 2


async def test_redelivered_confirmation_creates_one_order(
    client: TestClient[Any, Any],
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    amqp: AbstractChannel,
    db: asyncpg.Connection,
    settings: Settings,
    webhook_url: Callable[[str], str],
) -> None:
    customer = Customer()
    await converse(poster(client, webhook_url("")), fake, customer, HAPPY_PATH_RU[:-1])
    confirmation = envelope(settings, customer, "да", f"{customer.client_id}-yes")
    for _ in range(3):
        await publish_raw(amqp, messages_queues(settings), confirmation, message_id="yes")
    await client.post(webhook_url(""), json=customer.says("ещё"))
    expected = expected_replies([*HAPPY_PATH_RU, "ещё"])
    await fake.wait_for(lambda: len(fake.texts_for(customer.client_id)) >= len(expected))

    count = await db.fetchval(
        "SELECT count(*) FROM orders WHERE client_id = $1", customer.client_id
    )
    assert count == 1
    assert fake.texts_for(customer.client_id) == expected


async def test_begin_reads_only_under_the_lock_and_the_commit_may_release_it(
    redis: Redis, settings: Settings
) -> None:
    prefix = settings.redis_key_prefix
    store = DialogStore(redis, prefix, state_ttl=timedelta(hours=1), dedupe_ttl=timedelta(hours=1))
    locks = ClientLocks(redis, prefix, timeout=5)
    customer = Customer()
    message = InboundMessage(
        message_id=f"{customer.client_id}-1",
        conversation=Conversation(
            tenant=settings.tenant, provider="chat2desk", client_id=customer.client_id
        ),
        text="hi",
    )
    lock_key = locks.key(message.conversation.key)
    begin = store.begin(message)

    await redis.set(lock_key, "another-process")
    busy = await begin(lock_key, "mine", 5000)
    await redis.delete(lock_key)
    taken = await begin(lock_key, "mine", 5000)
    await store.commit(
        message, DialogState(turns=1), lock_key=lock_key, lock_token="mine", release=True
    )
    lock_after_commit = await redis.get(lock_key)
    again = await begin(lock_key, "next", 5000)

    assert busy is None
    assert taken == Begun(processed=False, waiting_replies=0, raw_state=None)
    assert lock_after_commit is None
    assert again == Begun(processed=True)


async def test_begin_reads_the_rating_the_customer_owes_in_the_same_round_trip(
    redis: Redis, settings: Settings
) -> None:
    prefix = settings.redis_key_prefix
    store = DialogStore(redis, prefix, state_ttl=timedelta(hours=1), dedupe_ttl=timedelta(hours=1))
    conversation = Conversation(
        tenant=settings.tenant, provider="chat2desk", client_id=Customer().client_id
    )
    message = InboundMessage(message_id="m-owes", conversation=conversation, text="5")
    owed = OwedRatings(redis, prefix)
    await owed.expect(conversation, 7, Lang.EN)
    lock_key = ClientLocks(redis, prefix, timeout=5).key(conversation.key)

    begun = await store.begin(message)(lock_key, "mine", 5000)

    assert begun is not None
    assert begun.raw_owed is not None
    assert await owed.read(conversation, begun.raw_owed) == OwedRating(order_id=7, lang=Lang.EN)


async def test_batched_redis_calls_each_get_their_own_reply_or_error(
    redis: Redis, settings: Settings
) -> None:
    batch = RedisBatch(redis)
    incr = batch.script("return redis.call('INCR', KEYS[1])")
    fail = batch.script("return redis.error_reply('refused')")
    key = f"{settings.redis_key_prefix}batched"

    # Made in one loop turn, so sent as one pipeline; each runs alone, in call order.
    results = await asyncio.gather(
        *(incr(keys=[key]) for _ in range(5)), fail(keys=[key]), return_exceptions=True
    )

    assert results[:5] == [1, 2, 3, 4, 5]
    assert isinstance(results[5], ResponseError)
    assert "refused" in str(results[5])


async def test_a_call_that_may_wait_rides_with_the_next_one_or_goes_alone(
    redis: Redis, settings: Settings
) -> None:
    batch = RedisBatch(redis)
    key = f"{settings.redis_key_prefix}lazy"
    get = batch.script("return redis.call('GET', KEYS[1])")

    lazy = batch.call(("SET", key, "1"), within=60)
    await asyncio.sleep(0.01)
    waited = lazy.done()
    seen = await get(keys=[key])  # must go now, and takes the waiting call first
    alone = batch.call(("SET", key, "2"), within=0.01)
    await asyncio.wait_for(alone, 5)

    assert (waited, seen, lazy.done()) == (False, "1", True)
    assert await redis.get(key) == "2"


async def test_the_shared_batch_of_a_client_does_not_keep_the_client_alive(
    services: Services,
) -> None:
    client = Redis.from_url(services.redis_url)
    batch_for(client)
    gone = weakref.ref(client)

    await client.aclose()
    del client
    gc.collect()

    assert gone() is None


async def test_a_bad_argument_fails_its_own_call_not_the_batch(
    redis: Redis, settings: Settings
) -> None:
    batch = RedisBatch(redis)
    key = f"{settings.redis_key_prefix}bad-arg"
    before = batch.call(("SET", key, "1"))

    with pytest.raises(TypeError):
        batch.call(("SET", key, None))  # type: ignore[arg-type]
    after = batch.call(("GET", key))

    assert (await before, await after) == ("OK", "1")


async def test_a_batch_whose_flusher_was_cancelled_still_answers_later_calls(
    redis: Redis, settings: Settings
) -> None:
    batch = RedisBatch(redis)
    key = f"{settings.redis_key_prefix}flusher"
    lost = batch.call(("SET", key, "1"))
    flusher = batch._flusher
    assert flusher is not None
    flusher.cancel()  # before it ever ran: as at a loop's teardown

    with pytest.raises(asyncio.CancelledError):
        await lost
    answered = await asyncio.wait_for(batch.call(("SET", key, "2")), 5)

    assert answered == "OK"
    assert await redis.get(key) == "2"
