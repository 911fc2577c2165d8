"""`begin`'s verdicts, read with one EXISTS of marker and hand-off: an applied message is a
duplicate even while a person answers the customer (nothing of it runs again), a hand-off
alone makes the step silent, and with neither the step goes on."""

from __future__ import annotations

import uuid

from redis.asyncio import Redis

from orderbot.config.settings import Settings
from orderbot.envelopes import Conversation, InboundMessage
from tests.support.steps import dialog_store


def _message() -> InboundMessage:
    conversation = Conversation(tenant="t", provider="chat2desk", client_id=uuid.uuid4().hex)
    return InboundMessage(message_id=uuid.uuid4().hex, conversation=conversation, text="hi")


async def _begin(settings: Settings, redis: Redis, message: InboundMessage) -> tuple[bool, bool]:
    store = dialog_store(settings, redis)
    lock_key = store.keys.lock(message.conversation.key)
    begun = await store.begin(message)(lock_key, "token", 5_000)
    assert begun is not None
    await redis.delete(lock_key)
    return begun.processed, begun.handed_off


async def test_begin_tells_applied_handed_off_and_neither_apart(
    settings: Settings, redis: Redis
) -> None:
    message = _message()
    keys = dialog_store(settings, redis).keys
    handoff = keys.handoff(message.conversation.key)
    marker = keys.processed(message)

    assert await _begin(settings, redis, message) == (False, False)
    await redis.set(handoff, "operator", px=60_000)
    assert await _begin(settings, redis, message) == (False, True)
    await redis.set(marker, "1", px=60_000)
    assert await _begin(settings, redis, message) == (True, False)
    await redis.delete(handoff)
    assert await _begin(settings, redis, message) == (True, False)
