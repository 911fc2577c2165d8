"""The senders of a process, one per provider, behind the shared rate limit."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping

from redis.asyncio import Redis

from orderbot.providers.base import ReplySender
from orderbot.providers.chat2desk import Chat2DeskSender
from orderbot.providers.twilio import TwilioSender
from orderbot.rate_limit import RateLimitedSender, TokenBucket
from orderbot.resources import open_http
from orderbot.settings import Settings


@contextlib.asynccontextmanager
async def open_senders(
    settings: Settings, redis: Redis
) -> AsyncIterator[Mapping[str, ReplySender]]:
    """One sender per configured provider; a worker with none refuses to start."""
    async with open_http(settings) as session:
        inner: dict[str, ReplySender] = {}
        if settings.chat2desk_api_token:
            inner["chat2desk"] = Chat2DeskSender(
                session,
                settings.chat2desk_api_url,
                settings.chat2desk_api_token.get_secret_value(),
            )
        if twilio := settings.twilio_credentials():
            inner["twilio"] = TwilioSender(session, settings.twilio_api_url, *twilio)
        limits = {"chat2desk": settings.chat2desk_rate_limit, "twilio": settings.twilio_rate_limit}
        yield {
            provider: RateLimitedSender(
                sender,
                TokenBucket(redis, per_minute=limits[provider]),
                key=f"{settings.redis_key_prefix}ratelimit:send:{provider}:{settings.tenant}",
                provider=provider,
                max_wait=settings.send_rate_max_wait.total_seconds(),
            )
            for provider, sender in inner.items()
        }
