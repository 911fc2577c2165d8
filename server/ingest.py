"""From a validated webhook to a durable message: confirmed on `messages`, or spooled.

The provider gets its 2xx only once the message is durable: confirmed by the broker,
or, when the broker cannot confirm it (down, not yet connected, slow, queue full),
written to the edge spool (server/spool.py), which drains it in order once the broker
is back. While anything is spooled, new messages are spooled behind it. A valid
message is refused only when the spool itself is full (503, so the provider retries).
The path holds no Redis round trip and no refusal for load: duplicates and a flooding
customer are the worker's to absorb, under the customer's lock.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
import structlog
from aiohttp import hdrs, web
from multidict import CIMultiDict
from pydantic import BaseModel, ValidationError

from orderbot.amqp.link import BrokerLink
from orderbot.envelopes import ConversationEvent, InboundMessage, encode
from orderbot.errors import BrokerUnavailable, SpoolFull
from orderbot.runtime import metrics
from server.envelope import QueuedBody
from server.errors import json_error
from server.spool import EdgeSpool

log = structlog.get_logger(__name__)


M = TypeVar("M", bound=BaseModel)


def parse_json(raw: bytes) -> Any:
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


class _Counters:
    """A provider's metric children, taken once: `.labels()` per request is a lock and
    a dict lookup each, on the path every webhook takes."""

    __slots__ = ("published", "spool_full", "spooled")

    def __init__(self, provider: str) -> None:
        self.published = metrics.WEBHOOKS_PUBLISHED.labels(provider)
        self.spooled = metrics.WEBHOOKS_SPOOLED.labels(provider)
        self.spool_full = metrics.WEBHOOKS_REJECTED.labels(provider, "spool_full")


_JSON_HEADERS = CIMultiDict({hdrs.CONTENT_TYPE: "application/json"})


def _json(body: bytes) -> web.Response:
    return web.Response(body=body, headers=_JSON_HEADERS)


class Ingest:
    """The one way a validated customer message enters the pipeline."""

    def __init__(self, broker: BrokerLink, spool: EdgeSpool) -> None:
        self._broker = broker
        self._spool = spool
        self._counters = {p: _Counters(p) for p in ("chat2desk", "twilio", "webchat")}
        # Bound once, after logging is configured: the module's lazy proxy binds a new
        # logger on every call, and this one logs on every webhook.
        self._log = log.bind()

    async def accept(self, message: InboundMessage) -> web.Response:
        conversation = message.conversation
        return await self._queue(
            conversation.provider,
            conversation.tenant,
            conversation.key,
            message.message_id,
            encode(message),
        )

    async def accept_body(self, queued: QueuedBody) -> web.Response:
        """A customer message whose body was written from its validated fields
        (server/envelope.py)."""
        return await self._queue(
            queued.provider, queued.tenant, queued.key, queued.message_id, queued.body
        )

    async def accept_event(self, event: ConversationEvent) -> web.Response:
        """An event of a customer's conversation (an operator wrote, the dialog closed):
        the same durable path as their messages, and the same partition, so it keeps its
        place among them."""
        conversation = event.conversation
        return await self._queue(
            conversation.provider,
            conversation.tenant,
            conversation.key,
            event.event_id,
            encode(event),
        )

    async def _queue(
        self, provider: str, tenant: str, key: str, message_id: str, body: bytes
    ) -> web.Response:
        counters = self._counters[provider]
        queue = self._broker.topology.messages_for(key)
        if self._spool.empty:
            try:
                await self._broker.publish(
                    queue, body, message_id=message_id, correlation_id=message_id
                )
            except BrokerUnavailable as exc:
                self._log.warning(
                    "webhook_spooling",
                    correlation_id=message_id,
                    tenant=tenant,
                    error=str(exc),
                )
            else:
                counters.published.inc()
                self._log.info("webhook_queued", correlation_id=message_id, tenant=tenant)
                return _json(_QUEUED)
        try:
            await self._spool.put(queue, message_id, body)
        except SpoolFull as exc:
            self._log.error(
                "webhook_refused_spool_full",
                correlation_id=message_id,
                tenant=tenant,
                error=str(exc),
            )
            counters.spool_full.inc()
            return json_error(503, "message not queued, retry later", headers={"Retry-After": "5"})
        counters.spooled.inc()
        self._log.info("webhook_spooled", correlation_id=message_id, tenant=tenant)
        return _json(_QUEUED)
