"""Which customer owes a rating for which order, in Redis beside their dialog state.

Whoever sends the DELIVERED news (the API handler or the outbox relay) writes it first, so the
customer's answer always finds it; the worker reads it under the customer's lock. One key per
customer: a newer delivery replaces an older unanswered question. Writes and deletes name
the order, so a late writer for one order never resets or removes the question of another.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, ValidationError
from redis.asyncio import Redis

from dialog import Lang
from orderbot.conversation.batch import batch_for
from orderbot.conversation.keys import Keys
from orderbot.envelopes import Conversation

RATING_TTL = timedelta(days=7)  # an answer a week later is not about that delivery any more

# Set unless the key already holds this order's question (which may have been asked again).
_EXPECT = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, owed = pcall(cjson.decode, current)
  if ok and type(owed) == 'table' and tostring(owed['order_id']) == ARGV[2] then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"""
_FORGET = """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
local ok, owed = pcall(cjson.decode, current)
if ok and type(owed) == 'table' and tostring(owed['order_id']) ~= ARGV[1] then
  return 0
end
return redis.call('DEL', KEYS[1])
"""


class OwedRating(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    order_id: int
    lang: Lang = Lang.RU
    asks: int = 0  # how often the question was asked again
    asked_by: str | None = None  # the message that made the last re-ask (for redelivery)


class OwedRatings:
    def __init__(self, redis: Redis, prefix: str, *, ttl: timedelta = RATING_TTL) -> None:
        self._redis = redis
        self._batch = batch_for(redis)  # the read of every idle step rides with the others
        self._keys = Keys(prefix)
        self._ttl_ms = int(ttl.total_seconds() * 1000)
        self._expect = redis.register_script(_EXPECT)
        self._forget = redis.register_script(_FORGET)

    def key(self, conversation: Conversation) -> str:
        return self._keys.rating(conversation)

    async def expect(self, conversation: Conversation, order_id: int, lang: Lang) -> None:
        owed = OwedRating(order_id=order_id, lang=lang)
        await self._expect(
            keys=[self.key(conversation)],
            args=[owed.model_dump_json(), str(order_id), self._ttl_ms],
        )

    async def get(self, conversation: Conversation) -> OwedRating | None:
        return await self.read(
            conversation, await self._batch.call(("GET", self.key(conversation)))
        )

    async def read(self, conversation: Conversation, raw: str | None) -> OwedRating | None:
        """The question in `raw`, as `get` read it (or a step's `begin`, in its round trip)."""
        if raw is None:
            return None
        try:
            return OwedRating.model_validate_json(raw)
        except ValidationError:
            await self._batch.call(("DEL", self.key(conversation)))  # unreadable: ask nothing
            return None

    async def save(self, conversation: Conversation, owed: OwedRating) -> None:
        # XX: an answer must not revive a question that expired meanwhile.
        await self._redis.set(self.key(conversation), owed.model_dump_json(), xx=True, keepttl=True)

    async def forget(self, conversation: Conversation, order_id: int) -> None:
        await self._forget(keys=[self.key(conversation)], args=[str(order_id)])
