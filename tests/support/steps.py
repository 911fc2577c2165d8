"""A worker's step processor wired to the real Redis and PostgreSQL and a broker and a
sender of the test's choosing, for tests that watch one step closely."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

import asyncpg
from redis.asyncio import Redis

from orderbot.amqp.publisher import Publisher
from orderbot.config.settings import Settings
from orderbot.conversation.dialog_store import DialogStore
from orderbot.conversation.handoff import Handoffs, OwnMessages
from orderbot.conversation.locks import ClientLocks
from orderbot.conversation.reply_order import reply_order_for
from orderbot.delivery.sender import ReplySender
from orderbot.envelopes import Conversation, InboundMessage
from orderbot.events.bus import EventBus
from orderbot.orders.store import OrderStore
from worker.handoff import HandoffDesk
from worker.rating import rating_desk
from worker.replies import ReplyDispatcher
from worker.service import dialog_rules
from worker.step import MessageProcessor


class NoOperators:
    """Operators nobody calls: a hand-off is marked, no transfer is made."""

    async def call(self, message: InboundMessage) -> None:
        return None


@dataclass
class RecordingSender:
    """A provider that takes every reply, recording (client id, text) in order."""

    sent: list[tuple[str, str]] = field(default_factory=list)

    async def send(self, conversation: Conversation, text: str) -> None:
        self.sent.append((conversation.client_id, text))


def dialog_store(settings: Settings, redis: Redis) -> DialogStore:
    return DialogStore(
        redis,
        settings.redis_key_prefix,
        state_ttl=timedelta(hours=1),
        dedupe_ttl=timedelta(hours=1),
    )


def reply_dispatcher(
    broker: Publisher, settings: Settings, redis: Redis, sender: ReplySender, *, attempts: int = 1
) -> ReplyDispatcher:
    """The worker's reply path over `sender`, its quick retries a millisecond apart."""
    return ReplyDispatcher(
        broker,
        sender,
        reply_order_for(redis, settings),
        attempts=attempts,
        backoff=timedelta(milliseconds=1),
    )


def make_processor(
    broker: Publisher,
    settings: Settings,
    redis: Redis,
    pool: asyncpg.Pool,
    *,
    sender: ReplySender,
    dialogs: DialogStore | None = None,
    stop: asyncio.Event | None = None,
    events: EventBus | None = None,
) -> MessageProcessor:
    prefix = settings.redis_key_prefix
    locks = ClientLocks(redis, prefix, 5.0)
    replies = reply_dispatcher(broker, settings, redis, sender)
    return MessageProcessor(
        broker=broker,
        dialogs=dialogs or dialog_store(settings, redis),
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
            events=events,
        ),
        stop=stop,
        events=events,
    )
