"""`GET /console/events`: the signed-in operator's tenant's live events, as SSE.

The same stream as `/api/events` (server/sse.py over the event bus), opened with the
session cookie instead of a key. A page is rendered with the id of the tenant's newest
event at that moment (`latest_event_id`) and its script subscribes from there, so an order
placed between the render and the subscription is not missed.
"""

from __future__ import annotations

import structlog
from aiohttp import web

from server.api_events import tenant_events
from server.console.access import console_of, signed_in
from server.keys import REDIS

log = structlog.get_logger(__name__)


async def latest_event_id(request: web.Request, tenant: str) -> str | None:
    """The id of the tenant's newest event; None (the page then follows from its
    subscription on) when Redis cannot say."""
    console = console_of(request)
    if console is None:
        return None
    try:
        newest = await request.config_dict[REDIS].xrevrange(console.keys.events(tenant), count=1)
    except Exception as exc:
        log.warning("console_latest_event_unknown", error=type(exc).__name__)
        return None
    return str(newest[0][0]) if newest else "0-0"


async def console_events(request: web.Request) -> web.StreamResponse:
    operator = await signed_in(request)
    return await tenant_events(request, operator.tenant)
