"""Webhook rate limits per tenant and per customer, shared by every server process.

A customer who floods the bot is refused before their messages eat the tenant's
budget, so the other customers of that business keep being served. When Redis is
unreachable the limits are not enforced: refusing every customer because the
limiter is down would be the worse failure.
"""

from __future__ import annotations

import math

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from orderbot.envelopes import Conversation
from orderbot.rate_limit import TokenBucket
from orderbot.settings import Settings

log = structlog.get_logger(__name__)


class WebhookLimits:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        tenant, customer = settings.webhook_rate_limit_tenant, settings.webhook_rate_limit_customer
        self._tenant = TokenBucket(redis, per_minute=tenant, burst=tenant)
        self._customer = TokenBucket(redis, per_minute=customer, burst=customer)
        self._prefix = f"{settings.redis_key_prefix}ratelimit:webhook"

    async def retry_after(self, conversation: Conversation) -> int | None:
        """None to accept; else the whole seconds to wait before trying again."""
        try:
            wait = await self._customer.take(f"{self._prefix}:customer:{conversation.key}")
            if wait <= 0:
                wait = await self._tenant.take(f"{self._prefix}:tenant:{conversation.tenant}")
        except (RedisError, OSError) as exc:
            log.warning("webhook_rate_limit_unavailable", error=str(exc))
            return None
        return max(1, math.ceil(wait)) if wait > 0 else None
