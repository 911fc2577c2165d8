"""Webhook rate limits per tenant and per customer, and the edge dedupe, in one round trip.

A customer who floods the bot is refused before their messages eat the tenant's
budget, so the other customers of that business keep being served. When Redis is
unreachable the limits are not enforced and the dedupe is skipped: refusing every
customer because the limiter is down would be the worse failure.

Why one script: every Redis command costs the server a round trip (mostly the
loopback `send()`), and the two buckets plus the edge lookup would be three per
webhook. One script does all three in the same
order (customer bucket, then tenant bucket, then the edge key), atomically, with
Redis's clock; the limits are arguments of each call, so every tenant can have its
own. The edge key is written only after the confirmed publish (`remember`). The
scripts and edge keys of concurrent requests share one pipelined round trip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from orderbot.config.settings import Settings
from orderbot.conversation.batch import batch_for
from orderbot.conversation.keys import Keys
from orderbot.delivery.rate_limit import TAKE_FUNCTION
from orderbot.envelopes import InboundMessage

log = structlog.get_logger(__name__)

# KEYS: customer bucket, tenant bucket, edge key.
# ARGV: customer tokens per ms, customer capacity, tenant tokens per ms, tenant capacity.
# Returns {wait_ms, seen}: wait_ms > 0 means refused (seen is then 0, not looked at).
_GATE = (
    TAKE_FUNCTION
    + """
local wait = take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
if wait > 0 then return {wait, 0} end
wait = take(KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[4]))
if wait > 0 then return {wait, 0} end
return {0, redis.call('EXISTS', KEYS[3])}
"""
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the gate said: `retry_after` seconds (None: accepted), and whether the edge
    key says the message was queued before."""

    retry_after: int | None
    seen: bool


OPEN = Verdict(retry_after=None, seen=False)

EDGE_MARK_WITHIN = 0.05  # seconds an edge key may wait for a batch to ride with


class WebhookLimits:
    """The gate every webhook passes. Its script and the edge keys go through the
    process's Redis batch (orderbot/conversation/batch.py): the requests that reach Redis in
    one event-loop turn share one pipelined round trip, each with its own atomic run of
    the script in arrival order, so the limits mean what they meant."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._tenant_default = settings.webhook_rate_limit_tenant
        self._customer_default = settings.webhook_rate_limit_customer
        self._keys = Keys(settings.redis_key_prefix)
        self._edge_ttl = max(1, int(settings.dedupe_ttl.total_seconds()))
        self._batch = batch_for(redis)
        self._gate = self._batch.script(_GATE)

    async def check(
        self,
        message: InboundMessage,
        *,
        tenant_per_minute: int | None = None,
        customer_per_minute: int | None = None,
    ) -> Verdict:
        """Take a token of the customer, then of the tenant, then look up the edge key.

        None for a limit means the setting's default. Redis unreachable: `OPEN`.
        """
        tenant = self._tenant_default if tenant_per_minute is None else tenant_per_minute
        customer = self._customer_default if customer_per_minute is None else customer_per_minute
        try:
            wait_ms, seen = await self._gate(
                keys=(*self._keys.webhook_buckets(message.conversation), self._keys.edge(message)),
                # A bucket holds a minute's worth: a burst of one minute's budget is fine.
                args=(customer / 60_000, customer, tenant / 60_000, tenant),
            )
        except (RedisError, OSError) as exc:
            log.warning("webhook_rate_limit_unavailable", error=str(exc))
            return OPEN
        if int(wait_ms) > 0:
            return Verdict(retry_after=max(1, math.ceil(int(wait_ms) / 1000)), seen=False)
        return Verdict(retry_after=None, seen=bool(int(seen)))

    def remember(self, message: InboundMessage) -> None:
        """Mark a message as queued (call only after the broker confirmed it).

        Best-effort and not awaited by the request: the key rides with the next
        request's gate script (which then already sees it), or goes alone within
        `EDGE_MARK_WITHIN` when no request comes; under light load that saves the
        webhook's second round trip. A re-post that arrives before the write lands is
        published again and absorbed by the worker's processed-marker (exactly-once
        steps never rested on this key).
        """
        self._batch.fire(
            ("SET", self._keys.edge(message), "1", "EX", self._edge_ttl),
            what="edge_dedupe_unavailable",
            within=EDGE_MARK_WITHIN,
        )
