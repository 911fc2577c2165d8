"""A token bucket in Redis shared by every process that sends to one provider account.

Chat2Desk throttles per account, not per process: two workers and an outbox worker
each keeping their own count would together exceed the limit. One Lua script
refills and takes a token atomically, using Redis's clock so processes on hosts
with skewed clocks agree.
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from orderbot.conversation.batch import batch_for
from orderbot.conversation.buckets import TAKE_FUNCTION
from orderbot.delivery.sender import ReplySender
from orderbot.envelopes import Conversation
from orderbot.errors import TransientSendError
from orderbot.runtime import metrics

_TAKE = TAKE_FUNCTION + "return take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))\n"


class TokenBucket:
    """`per_minute` tokens a minute per key, at most `burst` at once (default: a
    second's worth, which smooths outbound sends; webhook limits allow a minute's
    worth at once)."""

    def __init__(self, redis: Redis, *, per_minute: int, burst: float | None = None) -> None:
        self._rate_per_ms = per_minute / 60_000
        self._capacity = burst if burst is not None else max(1.0, per_minute / 60)
        # Through the process's Redis batch: concurrent steps share the round trip.
        self._take = batch_for(redis).script(_TAKE)

    async def take(self, key: str) -> float:
        """Take one of `key`'s tokens if there is one; else the seconds until one is due."""
        wait_ms = await self._take(keys=[key], args=[self._rate_per_ms, self._capacity])
        return int(wait_ms) / 1000


class RateLimitedSender:
    """Waits for a token (up to `max_wait`), else fails transiently so the reply is retried."""

    def __init__(
        self,
        inner: ReplySender,
        bucket: TokenBucket,
        *,
        key: str,
        provider: str,
        max_wait: float,
    ) -> None:
        self._inner = inner
        self._bucket = bucket
        self._key = key
        self._max_wait = max_wait
        self._waited = metrics.RATE_LIMIT_WAITS.labels(provider, "waited")
        self._deferred = metrics.RATE_LIMIT_WAITS.labels(provider, "deferred")

    async def send(self, conversation: Conversation, text: str) -> str | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._max_wait
        while (wait := await self._bucket.take(self._key)) > 0:
            if loop.time() + wait > deadline:
                self._deferred.inc()
                raise TransientSendError("outbound rate limit reached", retry_after=wait)
            self._waited.inc()
            await asyncio.sleep(wait)
        return await self._inner.send(conversation, text)
