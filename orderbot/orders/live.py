"""The live events the order pipeline publishes, and the bus a process publishes them on.

Here, not in orderbot/events, because the bus's stream key belongs to the Redis key
table (orderbot/conversation/keys.py), a layer beside the bus's own.
"""

from __future__ import annotations

from redis.asyncio import Redis

from orderbot.config.settings import Settings
from orderbot.conversation.batch import batch_for
from orderbot.conversation.keys import Keys
from orderbot.envelopes import Conversation
from orderbot.events.bus import RedisEventBus
from orderbot.events.models import LiveEvent


def live_events(redis: Redis, settings: Settings) -> RedisEventBus:
    return RedisEventBus(
        redis,
        Keys(settings.redis_key_prefix).events,
        commands=batch_for(redis),
        max_length=settings.events_stream_length,
        publish_timeout=settings.events_publish_timeout.total_seconds(),
    )


def order_event(
    tenant: str,
    *,
    order_id: int,
    status: str,
    previous: str | None,
    client_id: str,
    provider: str,
) -> LiveEvent:
    """An order created (`previous` None) or moved to `status`."""
    return LiveEvent.now(
        tenant,
        "order",
        order_id=order_id,
        status=status,
        previous=previous,
        client_id=client_id,
        provider=provider,
    )


def conversation_event(conversation: Conversation, *, state: str, why: str) -> LiveEvent:
    """A conversation handed to a person (`state` "handed_off") or back to the bot
    ("bot")."""
    return LiveEvent.now(
        conversation.tenant,
        "conversation",
        client_id=conversation.client_id,
        provider=conversation.provider,
        state=state,
        why=why,
    )
