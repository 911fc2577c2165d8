"""From a validated webhook to a confirmed message on `messages`.

The provider gets its 2xx only after the broker confirmed the persistent publish;
any doubt is a 503 with Retry-After, so the provider sends the message again and
the worker's dedupe absorbs the repeat. The edge dedupe in Redis only saves the
broker work on re-posts; it is best-effort and never a reason to refuse.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

from orderbot.amqp.link import BrokerLink
from orderbot.envelopes import InboundMessage, encode
from orderbot.errors import BrokerUnavailable
from orderbot.runtime import metrics
from server.errors import json_error
from server.keys import LIMITS

log = structlog.get_logger(__name__)


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


_QUEUED = orjson.dumps({"status": "queued"})
_DUPLICATE = orjson.dumps({"status": "duplicate"})


class _Counters:
    """A provider's metric children, taken once: `.labels()` per request was a lock and
    a dict lookup each, on the path every webhook takes. Created on first use, so a
    provider that never posts shows no series (the exact-count tests rely on that)."""

    __slots__ = ("duplicate", "published", "rate_limited", "unavailable")

    def __init__(self, provider: str) -> None:
        self.published = metrics.WEBHOOKS_PUBLISHED.labels(provider)
        self.duplicate = metrics.WEBHOOKS_IGNORED.labels(provider, "duplicate")
        self.rate_limited = metrics.WEBHOOKS_REJECTED.labels(provider, "rate_limited")
        self.unavailable = metrics.WEBHOOKS_REJECTED.labels(provider, "broker_unavailable")


_counters: dict[str, _Counters] = {}


def _json(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")


async def accept(
    broker: BrokerLink,
    app: web.Application,
    message: InboundMessage,
    *,
    tenant_per_minute: int | None = None,
    customer_per_minute: int | None = None,
) -> web.Response:
    """Queue a validated message: rate limits and edge dedupe (one Redis script), then
    the confirmed publish, then the edge key. None for a limit: the settings' default
    (`WEBHOOK_RATE_LIMIT_TENANT`, `WEBHOOK_RATE_LIMIT_CUSTOMER`)."""
    limits = app[LIMITS]
    conversation = message.conversation
    provider = conversation.provider
    counters = _counters.get(provider) or _counters.setdefault(provider, _Counters(provider))
    verdict = await limits.check(
        message,
        tenant_per_minute=tenant_per_minute,
        customer_per_minute=customer_per_minute,
    )
    if verdict.retry_after is not None:
        log.info(
            "webhook_rate_limited",
            correlation_id=message.message_id,
            tenant=conversation.tenant,
            client_id=conversation.client_id,
        )
        counters.rate_limited.inc()
        return json_error(
            429, "too many messages, retry later", headers={"Retry-After": str(verdict.retry_after)}
        )
    if verdict.seen:
        log.info("webhook_duplicate", correlation_id=message.message_id, tenant=conversation.tenant)
        counters.duplicate.inc()
        return _json(_DUPLICATE)
    try:
        await broker.publish(
            broker.topology.messages,
            encode(message),
            message_id=message.message_id,
            correlation_id=message.message_id,
        )
    except BrokerUnavailable as exc:
        log.warning(
            "webhook_not_queued",
            correlation_id=message.message_id,
            tenant=conversation.tenant,
            error=str(exc),
        )
        counters.unavailable.inc()
        return json_error(503, "message not queued, retry later", headers={"Retry-After": "5"})
    counters.published.inc()
    limits.remember(message)
    log.info("webhook_queued", correlation_id=message.message_id, tenant=conversation.tenant)
    return _json(_QUEUED)
