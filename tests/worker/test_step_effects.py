"""The order of a step's effects, on the in-memory broker with the real Redis and
PostgreSQL: a reply that could not be sent is in the outbox before the step is marked
applied, and a step whose reply can be neither sent nor queued commits nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta

import asyncpg
import pytest
from redis.asyncio import Redis

from orderbot.amqp.testing import InMemoryBroker, Published
from orderbot.amqp.topology import Topology
from orderbot.config.settings import Settings
from orderbot.conversation.dialog_store import DialogStore
from orderbot.conversation.handoff import Handoffs, OwnMessages
from orderbot.conversation.keys import Keys
from orderbot.conversation.locks import ClientLocks
from orderbot.conversation.reply_order import reply_order_for
from orderbot.envelopes import Conversation, InboundMessage, encode
from orderbot.errors import BrokerUnavailable, TransientSendError
from orderbot.orders.store import OrderStore
from worker.handoff import HandoffDesk
from worker.rating import rating_desk
from worker.replies import ReplyDispatcher
from worker.service import dialog_rules
from worker.step import MessageProcessor


class DownSender:
    async def send(self, conversation: Conversation, text: str) -> None:
        raise TransientSendError("provider down", status=503)


class NoOperators:
    async def call(self, message: InboundMessage) -> None:
        return None


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


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as created:
        yield created


def _processor(
    broker: InMemoryBroker,
    settings: Settings,
    redis: Redis,
    pool: asyncpg.Pool,
) -> MessageProcessor:
    prefix = settings.redis_key_prefix
    locks = ClientLocks(redis, prefix, 5.0)
    replies = ReplyDispatcher(
        broker,
        DownSender(),
        reply_order_for(redis, settings),
        attempts=1,
        backoff=timedelta(milliseconds=1),
    )
    return MessageProcessor(
        broker=broker,
        dialogs=DialogStore(
            redis, prefix, state_ttl=timedelta(hours=1), dedupe_ttl=timedelta(hours=1)
        ),
        locks=locks,
        orders=OrderStore(pool),
        replies=replies,
        rules=lambda _tenant: dialog_rules(settings),
        ratings=rating_desk(settings, redis, pool),
        handoff=HandoffDesk(
            handoffs=Handoffs(redis, prefix, ttl=timedelta(minutes=1)),
            own=OwnMessages(redis, prefix),
            operators=NoOperators(),
            replies=replies,
            locks=locks,
            words=settings.handoff_words,
        ),
    )


def _greeting(settings: Settings) -> tuple[InboundMessage, Published]:
    inbound = InboundMessage(
        message_id=uuid.uuid4().hex,
        conversation=Conversation(tenant="t", provider="chat2desk", client_id=uuid.uuid4().hex),
        text="Привет",
    )
    queue = Topology.from_settings(settings).messages
    return inbound, Published(queue, encode(inbound), inbound.message_id, {}, None)


async def test_an_unsent_reply_is_in_the_outbox_before_the_step_is_marked(
    settings: Settings, redis: Redis, pool: asyncpg.Pool
) -> None:
    inbound, message = _greeting(settings)
    marker = Keys(settings.redis_key_prefix).processed(inbound)
    broker = MarkerWatchingBroker(Topology.from_settings(settings), redis, marker)

    await broker.deliver(message, _processor(broker, settings, redis, pool))

    assert [p.queue for p in broker.published] == [broker.topology.outbox]
    assert broker.marked_at_publish == [False]
    assert await redis.exists(marker)


async def test_a_reply_neither_sent_nor_queued_commits_nothing(
    settings: Settings, redis: Redis, pool: asyncpg.Pool
) -> None:
    inbound, message = _greeting(settings)
    keys = Keys(settings.redis_key_prefix)
    broker = InMemoryBroker(Topology.from_settings(settings))
    broker.refusing = True

    with pytest.raises(BrokerUnavailable):  # the consumer runs it again once the broker is back
        await broker.deliver(message, _processor(broker, settings, redis, pool))

    assert not await redis.exists(keys.processed(inbound), keys.dialog(inbound.conversation))
