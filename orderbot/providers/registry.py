"""The senders of a process, one per provider, behind the shared rate limit."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping

from redis.asyncio import Redis

from orderbot.providers.base import ReplySender
from orderbot.providers.chat2desk import Chat2DeskSender
from orderbot.rate_limit import RateLimitedSender, TokenBucket
from orderbot.resources import open_http
from orderbot.settings import Settings


@contextlib.asynccontextmanager
async def open_senders(
    settings: Settings, redis: Redis
) -> AsyncIterator[Mapping[str, ReplySender]]:
    async with open_http(settings) as session:
        senders: dict[str, ReplySender] = {}
        if settings.chat2desk_api_token is not None:
            senders["chat2desk"] = RateLimitedSender(
                Chat2DeskSender(
                    session,
                    settings.chat2desk_api_url,
                    settings.chat2desk_api_token.get_secret_value(),
                ),
                TokenBucket(
                    redis,
                    f"{settings.redis_key_prefix}ratelimit:send:chat2desk:{settings.tenant}",
                    per_minute=settings.chat2desk_rate_limit,
                ),
                provider="chat2desk",
                max_wait=settings.send_rate_max_wait.total_seconds(),
            )
        yield senders
