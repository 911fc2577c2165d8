"""Webhook rate limits per tenant and per customer, and the edge dedupe, in one round trip.

A customer who floods the bot is refused before their messages eat the tenant's
budget, so the other customers of that business keep being served. When Redis is
unreachable the limits are not enforced and the dedupe is skipped: refusing every
customer because the limiter is down would be the worse failure.

Why one script: every Redis command costs the server about 100 µs of CPU on this
kind of machine (mostly the loopback `send()`), and the two buckets plus the edge
`EXISTS` were three of them per webhook. One script does all three in the same
order (customer bucket, then tenant bucket, then the edge key), atomically, with
Redis's clock; the limits are arguments of each call, so every tenant can have its
own. The edge key is written only after the confirmed publish (`remember`). The
scripts and edge keys of concurrent requests share one pipelined round trip.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from dataclasses import dataclass
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from orderbot.envelopes import Conversation
from orderbot.settings import Settings

log = structlog.get_logger(__name__)

# KEYS: customer bucket, tenant bucket, edge key.
# ARGV: customer tokens per ms, customer capacity, tenant tokens per ms, tenant capacity.
# Returns {wait_ms, seen}: wait_ms > 0 means refused (seen is then 0, not looked at).
_GATE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + t[2] / 1000
local function take(key, rate, capacity)
  local bucket = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(bucket[1]) or capacity
  local ts = tonumber(bucket[2]) or now
  tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
  local wait = 0
  if tokens >= 1 then
    tokens = tokens - 1
  else
    wait = math.ceil((1 - tokens) / rate)
  end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('PEXPIRE', key, math.ceil(capacity / rate) + 1000)
  return wait
end
local wait = take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
if wait > 0 then return {wait, 0} end
wait = take(KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[4]))
if wait > 0 then return {wait, 0} end
return {0, redis.call('EXISTS', KEYS[3])}
"""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the gate said: `retry_after` seconds (None: accepted), and whether the edge
    key says the message was queued before."""

    retry_after: int | None
    seen: bool


OPEN = Verdict(retry_after=None, seen=False)

# A queued check: the script's keys and arguments, and where its verdict goes.
_Check = tuple[tuple[str | float, ...], "asyncio.Future[Verdict]"]


class WebhookLimits:
    """The gate every webhook passes, batched: the checks (and edge keys) of all the
    requests that reach it in one turn of the event loop go to Redis as one pipeline.

    Each request still gets its own run of the script, atomic and in arrival order, so
    the limits mean what they meant; what is shared is the round trip. One pipeline is
    in flight at a time and the next batch gathers meanwhile, so batches grow with load
    (group commit) and a lone request waits for nothing but its own round trip.
    """

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._tenant_default = settings.webhook_rate_limit_tenant
        self._customer_default = settings.webhook_rate_limit_customer
        self._prefix = f"{settings.redis_key_prefix}ratelimit:webhook"
        self._edge_ttl = max(1, int(settings.dedupe_ttl.total_seconds()))
        self._sha = hashlib.sha1(_GATE.encode()).hexdigest()  # noqa: S324 (Redis's script id)
        self._checks: list[_Check] = []
        self._marks: list[str] = []
        self._flusher: asyncio.Task[None] | None = None

    async def check(
        self,
        conversation: Conversation,
        edge_key: str,
        *,
        tenant_per_minute: int | None = None,
        customer_per_minute: int | None = None,
    ) -> Verdict:
        """Take a token of the customer, then of the tenant, then look up the edge key.

        None for a limit means the setting's default. Redis unreachable: `OPEN`.
        """
        tenant = self._tenant_default if tenant_per_minute is None else tenant_per_minute
        customer = self._customer_default if customer_per_minute is None else customer_per_minute
        argv = (
            f"{self._prefix}:customer:{conversation.key}",
            f"{self._prefix}:tenant:{conversation.tenant}",
            edge_key,
            # A bucket holds a minute's worth: a burst of one minute's budget is fine.
            customer / 60_000,
            customer,
            tenant / 60_000,
            tenant,
        )
        verdict: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._checks.append((argv, verdict))
        self._kick()
        return await verdict

    def remember(self, edge_key: str) -> None:
        """Mark a message as queued (call only after the broker confirmed it).

        Best-effort and not awaited by the request: the key rides with the next batch.
        A re-post that arrives before the write lands is published again and absorbed
        by the worker's processed-marker (guarantee 2 never rested on this key).
        """
        self._marks.append(edge_key)
        self._kick()

    async def drain(self) -> None:
        """Wait until everything queued so far has reached Redis (tests, shutdown)."""
        while (flusher := self._flusher) is not None:
            await asyncio.shield(flusher)

    def _kick(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="webhook-gate")

    async def _flush(self) -> None:
        # Runs after the handlers that were ready in this loop turn: they are the batch.
        try:
            while self._checks or self._marks:
                checks, self._checks = self._checks, []
                marks, self._marks = self._marks, []
                try:
                    replies = await self._send(checks, marks)
                except (RedisError, OSError) as exc:
                    log.warning("webhook_rate_limit_unavailable", error=str(exc), requests=len(checks))
                    replies = [None] * len(checks)  # open: never refuse for this
                except BaseException as exc:
                    for _, verdict in checks:
                        if not verdict.done():
                            verdict.set_exception(exc)
                    raise
                for (_, verdict), reply in zip(checks, replies, strict=True):
                    if not verdict.done():  # its request may have gone meanwhile
                        verdict.set_result(_verdict(reply))
        finally:
            self._flusher = None

    async def _send(self, checks: list[_Check], marks: list[str]) -> list[Any]:
        """The replies of the checks, in order (an exception where one failed)."""
        replies = await self._pipeline([argv for argv, _ in checks], marks)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:  # a restarted or flushed Redis: load the script, run those again
            self._sha = await self._redis.script_load(_GATE)
            again = await self._pipeline([checks[i][0] for i in missing], [])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies[: len(checks)]

    async def _pipeline(self, checks: list[tuple[str | float, ...]], marks: list[str]) -> list[Any]:
        pipe: Any = self._redis.pipeline(transaction=False)
        for argv in checks:
            pipe.evalsha(self._sha, 3, *argv)
        for key in marks:
            pipe.set(key, "1", ex=self._edge_ttl)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        for reply in replies[len(checks) :]:
            if isinstance(reply, Exception):
                log.warning("edge_dedupe_unavailable", error=str(reply))
                break
        return replies


def _verdict(reply: Any) -> Verdict:
    if reply is None:
        return OPEN  # the batch failed; it was logged once
    if isinstance(reply, Exception):
        # Redis refusing the script: never refuse a customer because the limiter fails.
        log.warning("webhook_rate_limit_unavailable", error=str(reply))
        return OPEN
    wait_ms, seen = reply
    if int(wait_ms) > 0:
        return Verdict(retry_after=max(1, math.ceil(int(wait_ms) / 1000)), seen=False)
    return Verdict(retry_after=None, seen=bool(int(seen)))
