"""Per-customer order of replies that go through the outbox.

While a customer has a reply waiting in the outbox, their newer replies queue
behind it, so nobody reads answer 2 before answer 1. Each customer has a sorted
set of waiting reply ids (in enqueue order) and a hash of when each was last seen
by a process. Only the head of the set may be sent.

A reply can be registered and then never reach the outbox (a worker dies between
the two and its message is later dead-lettered). Such an orphan would block the
customer forever, so a head not seen for `grace` is dropped from the order.
"""

from __future__ import annotations

from datetime import timedelta

from redis.asyncio import Redis

from orderbot.envelopes import Conversation
from orderbot.settings import Settings

_ENQUEUE = """
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], redis.call('INCR', KEYS[3]), ARGV[1])
end
redis.call('HSET', KEYS[2], ARGV[1], ms)
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
return redis.call('ZSCORE', KEYS[1], ARGV[1])
"""

_MY_TURN = """
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 1
end
redis.call('HSET', KEYS[2], ARGV[1], ms)
while true do
  local head = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
  if head == ARGV[1] then
    return 1
  end
  local seen = tonumber(redis.call('HGET', KEYS[2], head) or '0')
  if ms - seen <= tonumber(ARGV[2]) then
    return 0
  end
  redis.call('ZREM', KEYS[1], head)
  redis.call('HDEL', KEYS[2], head)
end
"""

_DONE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('ZCARD', KEYS[1])
"""


class ReplyOrder:
    def __init__(self, redis: Redis, prefix: str, *, grace: timedelta, ttl: timedelta) -> None:
        self._redis = redis
        self._prefix = prefix
        self._grace_ms = int(grace.total_seconds() * 1000)
        self._ttl_ms = int(ttl.total_seconds() * 1000)
        self._enqueue = redis.register_script(_ENQUEUE)
        self._my_turn = redis.register_script(_MY_TURN)
        self._done = redis.register_script(_DONE)

    def _keys(self, conversation: Conversation) -> list[str]:
        base = f"{self._prefix}outbox:{conversation.key}"
        return [f"{base}:order", f"{base}:seen", f"{base}:seq"]

    async def has_waiting(self, conversation: Conversation) -> bool:
        return bool(await self._redis.zcard(self._keys(conversation)[0]))

    async def enqueue(self, conversation: Conversation, reply_id: str) -> int:
        """Register a reply before it is published to the outbox; returns its position."""
        return int(
            await self._enqueue(keys=self._keys(conversation), args=[reply_id, self._ttl_ms])
        )

    async def is_turn(self, conversation: Conversation, reply_id: str) -> bool:
        keys = self._keys(conversation)[:2]
        return bool(await self._my_turn(keys=keys, args=[reply_id, self._grace_ms]))

    async def done(self, conversation: Conversation, reply_id: str) -> None:
        await self._done(keys=self._keys(conversation)[:2], args=[reply_id])


def reply_order_for(redis: Redis, settings: Settings) -> ReplyOrder:
    """A waiting head is re-seen at least every longest delay tier while the outbox
    keeps up. The grace is far longer than that so that a backlog or an outbox
    worker down for a while does not pass for an orphan and reorder replies; the
    cost is that a true orphan (its message dead-lettered) holds the customer's
    later outbox replies back for that long."""
    longest = max(settings.outbox_delays)
    return ReplyOrder(
        redis,
        settings.redis_key_prefix,
        grace=max(3 * longest + timedelta(minutes=1), timedelta(hours=1)),
        ttl=settings.outbox_max_age + timedelta(days=1),
    )
