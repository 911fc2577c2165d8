"""The order of a step's effects, on the in-memory broker with the real Redis and
PostgreSQL: a reply that could not be sent is in the outbox before the step is marked
applied, and a step whose reply can be neither sent nor queued commits nothing and is
run again in place until it can, or until the process stops."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping

import asyncpg
import pytest
from redis.asyncio import Redis

from dialog import DialogState
from orderbot.amqp.testing import InMemoryBroker, Published
from orderbot.amqp.topology import Topology
from orderbot.config.settings import Settings
from orderbot.conversation.keys import Keys
from orderbot.envelopes import Conversation, InboundMessage, encode
from orderbot.errors import LockLost, Stopping, TransientSendError
from tests.support.steps import RecordingSender, dialog_store, make_processor


class DownSender:
    async def send(self, conversation: Conversation, text: str) -> None:
        raise TransientSendError("provider down", status=503)


class CountingRefusals(InMemoryBroker):
    """A broker that confirms nothing, and says when it has refused twice."""

    def __init__(self, topology: Topology) -> None:
        super().__init__(topology)
        self.refusing = True
        self.refusals = 0
        self.refused_twice = asyncio.Event()

    async def publish(
        self,
        queue: str,
        body: bytes,
        *,
        message_id: str,
        headers: Mapping[str, object] | None = None,
        correlation_id: str | None = None,
    ) -> None:
        self.refusals += 1
        if self.refusals >= 2:
            self.refused_twice.set()
        await super().publish(
            queue, body, message_id=message_id, headers=headers, correlation_id=correlation_id
        )


class MarkerWatchingBroker(InMemoryBroker):
    """Records, with each publish, whether the step was already marked applied."""

    def __init__(self, topology: Topology, redis: Redis, marker: str) -> None:
        super().__init__(topology)
        self._redis = redis
        self._marker = marker
        self.marked_at_publish: list[bool] = []

    async def publish(
        self,
        queue: str,
        body: bytes,
        *,
        message_id: str,
        headers: Mapping[str, object] | None = None,
        correlation_id: str | None = None,
    ) -> None:
        self.marked_at_publish.append(bool(await self._redis.exists(self._marker)))
        await super().publish(
            queue, body, message_id=message_id, headers=headers, correlation_id=correlation_id
        )


def _greeting(settings: Settings) -> tuple[InboundMessage, Published]:
    inbound = InboundMessage(
        message_id=uuid.uuid4().hex,
        conversation=Conversation(tenant="t", provider="chat2desk", client_id=uuid.uuid4().hex),
        text="Привет",
    )
    queue = Topology.from_settings(settings).partitions[0]
    return inbound, Published(queue, encode(inbound), inbound.message_id, {}, None)


async def test_an_unsent_reply_is_in_the_outbox_before_the_step_is_marked(
    settings: Settings, redis: Redis, pool: asyncpg.Pool
) -> None:
    inbound, message = _greeting(settings)
    marker = Keys(settings.redis_key_prefix).processed(inbound)
    broker = MarkerWatchingBroker(Topology.from_settings(settings), redis, marker)

    await broker.deliver(
        message, make_processor(broker, settings, redis, pool, sender=DownSender())
    )

    assert [p.queue for p in broker.published] == [broker.topology.outbox]
    assert broker.marked_at_publish == [False]
    assert await redis.exists(marker)


async def test_a_reply_neither_sent_nor_queued_commits_nothing_and_is_tried_again(
    settings: Settings, redis: Redis, pool: asyncpg.Pool
) -> None:
    inbound, message = _greeting(settings)
    keys = Keys(settings.redis_key_prefix)
    broker = CountingRefusals(Topology.from_settings(settings))
    stop = asyncio.Event()
    processor = make_processor(broker, settings, redis, pool, sender=DownSender(), stop=stop)

    delivered = asyncio.create_task(broker.deliver(message, processor))
    async with asyncio.timeout(10):
        await broker.refused_twice.wait()  # the step runs again in place, with backoff
    assert not await redis.exists(keys.processed(inbound), keys.dialog(inbound.conversation))

    stop.set()  # the process is asked to stop: the message is left for redelivery
    with pytest.raises(Stopping):
        await delivered
    assert not await redis.exists(keys.processed(inbound), keys.dialog(inbound.conversation))


class LapsingSender(RecordingSender):
    """Takes every reply; while the first is on its way the step's lock lapses, as a lease
    does when the step outlives LOCK_TIMEOUT (its renewals late on a loaded machine)."""

    def __init__(self, redis: Redis, lock_key: str) -> None:
        super().__init__()
        self._redis = redis
        self._lock_key = lock_key

    async def send(self, conversation: Conversation, text: str) -> None:
        if not self.sent:
            await self._redis.delete(self._lock_key)
        await super().send(conversation, text)


async def test_a_step_whose_lock_lapsed_unclaimed_commits_and_says_its_reply_once(
    settings: Settings, redis: Redis, pool: asyncpg.Pool
) -> None:
    inbound, message = _greeting(settings)
    keys = Keys(settings.redis_key_prefix)
    broker = InMemoryBroker(Topology.from_settings(settings))
    sender = LapsingSender(redis, keys.lock(inbound.conversation.key))

    await broker.deliver(message, make_processor(broker, settings, redis, pool, sender=sender))

    assert len(sender.sent) == 1
    assert await redis.get(keys.processed(inbound)) == "1"
    state = await redis.get(keys.dialog(inbound.conversation))
    assert state is not None
    assert DialogState.model_validate_json(state).turns == 1


async def test_a_lapsed_lock_fences_the_commit_once_the_dialog_moved_on(
    settings: Settings, redis: Redis
) -> None:
    inbound, _ = _greeting(settings)
    keys = Keys(settings.redis_key_prefix)
    store = dialog_store(settings, redis)
    lock_key = keys.lock(inbound.conversation.key)
    assert await store.begin(inbound)(lock_key, "mine", 5000) is not None
    await redis.delete(lock_key)  # lapsed; another step took it, committed and let it go
    await redis.set(keys.dialog(inbound.conversation), DialogState(turns=1).model_dump_json())

    with pytest.raises(LockLost):
        await store.commit(
            inbound,
            DialogState(turns=1),
            lock_key=lock_key,
            lock_token="mine",
            release=True,
            began_at_turn=0,
        )
    assert not await redis.exists(keys.processed(inbound))


async def test_a_lapsed_lock_someone_else_holds_fences_the_commit(
    settings: Settings, redis: Redis
) -> None:
    inbound, _ = _greeting(settings)
    keys = Keys(settings.redis_key_prefix)
    store = dialog_store(settings, redis)
    lock_key = keys.lock(inbound.conversation.key)
    assert await store.begin(inbound)(lock_key, "mine", 5000) is not None
    await redis.set(lock_key, "another-step")

    with pytest.raises(LockLost):
        await store.commit(
            inbound,
            DialogState(turns=1),
            lock_key=lock_key,
            lock_token="mine",
            release=True,
            began_at_turn=0,
        )
    assert not await redis.exists(keys.processed(inbound), keys.dialog(inbound.conversation))
