"""Recording a provider's delivery status of one of our replies (Twilio's status callbacks,
Chat2Desk's outbox_status events) in the conversation history.

Written at once, in the request: a status that cannot be written is answered 503, so the
provider may try again, rather than acknowledged and lost.
"""

from __future__ import annotations

import structlog
from aiohttp import web

from orderbot.envelopes import utcnow
from orderbot.errors import is_transient
from orderbot.history import store
from orderbot.history.events import event_of
from orderbot.history.models import MessageStatus
from orderbot.runtime import metrics
from server.errors import json_error
from server.keys import EVENTS, POSTGRES, SETTINGS

log = structlog.get_logger(__name__)


async def record_delivery(
    request: web.Request,
    *,
    tenant: str,
    provider: str,
    provider_message_id: str,
    status: MessageStatus,
    error: str | None,
) -> web.Response | None:
    """None once recorded (or when history is off); else the 503 to answer."""
    if not request.app[SETTINGS].history_enabled:
        return None
    try:
        written = await store.record_receipt(
            request.app[POSTGRES],
            tenant=tenant,
            provider=provider,
            provider_message_id=provider_message_id,
            status=status,
            at=utcnow(),
            error=error,
        )
    except Exception as exc:
        if not is_transient(exc):
            raise
        metrics.HISTORY_RECEIPTS.labels(provider, "failed").inc()
        log.warning("delivery_status_not_recorded", provider=provider, error=repr(exc))
        return json_error(503, "history unavailable, retry later", headers={"Retry-After": "30"})
    metrics.HISTORY_RECEIPTS.labels(provider, "recorded" if written else "unapplied").inc()
    for row in written:
        await request.app[EVENTS].publish(event_of(row))
    log.info(
        "delivery_status_recorded",
        tenant=tenant,
        provider=provider,
        provider_message_id=provider_message_id,
        status=status,
        applied=bool(written),
    )
    return None
