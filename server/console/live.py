"""`GET /console/events`: the signed-in operator's tenant's live events, as SSE.

The same stream as `/api/events` (server/sse.py over the event bus), opened with the
session cookie instead of a key. A page is rendered with the id of the tenant's newest
event at that moment (`latest_event_id`) and its script subscribes from there, so an order
placed between the render and the subscription is not missed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from orderbot.events.bus import EventBus
from server.api_events import last_event_id
from server.console.access import console_of, signed_in
from server.keys import CLOSING, EVENTS, REDIS, SETTINGS, STREAMS
from server.sse import SseMessage, stream_events, too_many_streams

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


async def _messages(bus: EventBus, tenant: str, last_id: str | None) -> AsyncIterator[SseMessage]:
    events = bus.subscribe(tenant, last_id)
    try:
        async for event in events:
            yield SseMessage(event.id, event.kind, event.model_dump_json().encode())
    finally:
        await events.aclose()  # type: ignore[attr-defined]


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
            _messages(config[EVENTS], operator.tenant, last_id),
            keepalive=config[SETTINGS].events_keepalive.total_seconds(),
            closing=config[CLOSING],
        )
