"""From a validated webhook to a confirmed message on `messages` (guarantee 1).

The provider gets its 2xx only after the broker confirmed the persistent publish;
any doubt is a 503 with Retry-After, so the provider sends the message again and
the worker's dedupe absorbs the repeat. The edge dedupe in Redis only saves the
broker work on re-posts; it is best-effort and never a reason to refuse.
"""

from __future__ import annotations

from typing import Any, TypeVar

import asyncpg
import orjson
import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from orderbot import metrics
from orderbot.broker import BrokerLink, BrokerUnavailable
from orderbot.envelopes import InboundMessage, encode
from orderbot.settings import Settings
from server.errors import json_error
from server.rate_limits import WebhookLimits

log = structlog.get_logger(__name__)

SETTINGS = web.AppKey("settings", Settings)
BROKER = web.AppKey("broker", BrokerLink)
REDIS = web.AppKey("redis", Redis)
LIMITS = web.AppKey("limits", WebhookLimits)
POSTGRES = web.AppKey("postgres", asyncpg.Pool)

M = TypeVar("M", bound=BaseModel)


async def read_json(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        raise web.HTTPBadRequest(reason="empty body")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise web.HTTPBadRequest(reason="malformed JSON") from None


def validation_error(model: type[M], body: dict[str, Any]) -> M | web.Response:
    """The model, or a 422 listing what is wrong (without echoing input values)."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        metrics.WEBHOOKS_REJECTED.labels(_provider_of(model), "invalid").inc()
        problems = [
            {"field": ".".join(str(p) for p in err["loc"]), "problem": err["msg"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]
        return json_error(422, "invalid body", detail=problems)


def _provider_of(model: type[BaseModel]) -> str:
    return model.__module__.rsplit(".", 1)[-1]


def _edge_key(settings: Settings, message: InboundMessage) -> str:
    c = message.conversation
    return f"{settings.redis_key_prefix}edge:{c.tenant}:{c.provider}:{message.message_id}"


async def accept(broker: BrokerLink, app: web.Application, message: InboundMessage) -> web.Response:
    settings = app[SETTINGS]
    cache = app[REDIS]
    provider = message.conversation.provider
    edge_key = _edge_key(settings, message)
    log_ = log.bind(correlation_id=message.message_id, tenant=message.conversation.tenant)
    retry_after = await app[LIMITS].retry_after(message.conversation)
    if retry_after is not None:
        log_.info("webhook_rate_limited", client_id=message.conversation.client_id)
        metrics.WEBHOOKS_REJECTED.labels(provider, "rate_limited").inc()
        return json_error(
            429, "too many messages, retry later", headers={"Retry-After": str(retry_after)}
        )
    try:
        if await cache.exists(edge_key):
            log_.info("webhook_duplicate")
            metrics.WEBHOOKS_IGNORED.labels(provider, "duplicate").inc()
            return web.json_response({"status": "duplicate"})
    except (RedisError, OSError) as exc:
        log_.warning("edge_dedupe_unavailable", error=str(exc))
    try:
        await broker.publish(
            broker.topology.messages,
            encode(message),
            message_id=message.message_id,
            correlation_id=message.message_id,
        )
    except BrokerUnavailable as exc:
        log_.warning("webhook_not_queued", error=str(exc))
        metrics.WEBHOOKS_REJECTED.labels(provider, "broker_unavailable").inc()
        return json_error(503, "message not queued, retry later", headers={"Retry-After": "5"})
    metrics.WEBHOOKS_PUBLISHED.labels(provider).inc()
    try:
        await cache.set(edge_key, "1", ex=int(settings.dedupe_ttl.total_seconds()))
    except (RedisError, OSError) as exc:
        log_.warning("edge_dedupe_unavailable", error=str(exc))
    log_.info("webhook_queued")
    return web.json_response({"status": "queued"})
