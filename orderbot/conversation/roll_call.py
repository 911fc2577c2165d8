"""The workers' roll call in Redis: a sorted set of members scored by when they expire.

One script renews a member, drops the expired and returns the rest, on Redis's own
clock (TIME), so the workers' clocks need not agree.
"""

from __future__ import annotations

from datetime import timedelta

from redis.asyncio import Redis

from orderbot.conversation.batch import batch_for
from orderbot.conversation.keys import Keys

_BEAT = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[1], ms + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


class RedisRollCall:
    def __init__(self, redis: Redis, prefix: str, queue: str) -> None:
        self._redis = redis
        self._key = Keys(prefix).roll_call(queue)
        self._beat = batch_for(redis).script(_BEAT)

    async def beat(self, member: str, ttl: timedelta) -> list[str]:
        ttl_ms = max(1, int(ttl.total_seconds() * 1000))
        members = await self._beat(keys=[self._key], args=[member, ttl_ms])
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    async def leave(self, member: str) -> None:
        await self._redis.zrem(self._key, member)
