"""`GET /console/events`: the signed-in operator's tenant's live events, as SSE.

The same stream as `/api/events` (server/sse.py over the event bus), opened with the
session cookie instead of a key. A page is rendered with the id of the tenant's newest
event at that moment (`latest_event_id`) and its script subscribes from there, so an order
placed between the render and the subscription is not missed.
"""

from __future__ import annotations

import structlog
from aiohttp import web

from server.api_events import event_messages, last_event_id
from server.console.access import console_of, signed_in
from server.keys import CLOSING, EVENTS, REDIS, SETTINGS, STREAMS
from server.sse import stream_events, too_many_streams

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
    last_id = last_event_id(request)
    if isinstance(last_id, web.Response):
        return last_id
    config = request.config_dict
    with config[STREAMS].hold(operator.tenant) as admitted:
        if not admitted:
            return too_many_streams()
        return await stream_events(
            request,
            event_messages(config[EVENTS], operator.tenant, last_id),
            keepalive=config[SETTINGS].events_keepalive.total_seconds(),
            closing=config[CLOSING],
        )
