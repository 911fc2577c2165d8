"""Who answers a conversation: the bot, or, for a while, a person.

A handed-off conversation is one Redis key with a TTL: set when the customer asks for a
person or an operator writes to them (each operator message sets it again), deleted when
the provider closes the dialog, and gone by itself after HANDOFF_TTL of operator silence,
which is how the bot takes a conversation back without anyone telling it. The step's
`begin` script reads the key with the customer's lock, so a silent step costs no extra
round trip.

The bot's own Chat2Desk sends come back to the webhook as operator messages (`outbox`
events). The id Chat2Desk answered each send with is kept here for a day, so such an event
is recognised as ours by that id rather than guessed at from its fields.
"""

from __future__ import annotations

from datetime import timedelta

from redis.asyncio import Redis

from orderbot.conversation.batch import batch_for
from orderbot.conversation.keys import Keys
from orderbot.envelopes import Conversation

# Chat2Desk retries a hook for about 2 h; a day covers that and a reconciler's lookback.
OWN_MESSAGE_TTL = timedelta(days=1)
_RIDE_WITHIN = 0.05  # seconds an own id may wait for a call to ride with


class Handoffs:
    def __init__(self, redis: Redis, prefix: str, *, ttl: timedelta) -> None:
        self._keys = Keys(prefix)
        self._batch = batch_for(redis)
        self._ttl_ms = max(1, int(ttl.total_seconds() * 1000))

    def key(self, conversation: Conversation) -> str:
        return self._keys.handoff(conversation.key)

    async def hand_off(self, conversation: Conversation, why: str) -> None:
        """A person answers now: the bot stays silent for HANDOFF_TTL from this moment."""
        await self._batch.call(("SET", self.key(conversation), why, "PX", self._ttl_ms))

    async def give_back(self, conversation: Conversation) -> bool:
        """The bot answers again; whether the conversation was handed off."""
        return bool(await self._batch.call(("DEL", self.key(conversation))))

    async def handed_off(self, conversation: Conversation) -> bool:
        return bool(await self._batch.call(("EXISTS", self.key(conversation))))


class OwnMessages:
    """The provider's ids of messages the bot sent, per tenant and provider."""

    def __init__(self, redis: Redis, prefix: str, *, ttl: timedelta = OWN_MESSAGE_TTL) -> None:
        self._keys = Keys(prefix)
        self._batch = batch_for(redis)
        self._ttl_ms = max(1, int(ttl.total_seconds() * 1000))

    def remember(self, conversation: Conversation, message_id: str) -> None:
        """Queued to ride with the sender's next Redis call (the step's commit, the outbox's
        sent-marker), so a send costs no round trip of its own; in that pipeline it goes
        before the commit that lets the customer's lock go. A failure is logged; that
        reply's outbox event would then read as an operator's."""
        key = self._keys.own_message(conversation.tenant, conversation.provider, message_id)
        self._batch.fire(
            ("SET", key, conversation.client_id, "PX", self._ttl_ms),
            what="own_message_not_remembered",
            within=_RIDE_WITHIN,
        )

    async def sent_by_us(self, conversation: Conversation, message_id: str) -> bool:
        key = self._keys.own_message(conversation.tenant, conversation.provider, message_id)
        return bool(await self._batch.call(("EXISTS", key)))
