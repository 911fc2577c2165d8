"""`GET /api/events`: the key's tenant's live events as Server-Sent Events.

An operator's dashboard (or `curl -N`) holds the stream open; one that reconnects
sends Last-Event-ID (the header EventSource sends, or `?last_event_id=`) and reads on
from there, as far back as the tenant's stream keeps (EVENTS_STREAM_LENGTH).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from orderbot.events.bus import EventBus, is_event_id
from server.api import authorized
from server.errors import json_error
from server.keys import CLOSING, EVENTS, SETTINGS, STREAMS
from server.sse import SseMessage, stream_events, too_many_streams


def last_event_id(request: web.Request) -> str | web.Response | None:
    """The id to resume after; a 400 for one that cannot be an id of ours."""
    value = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    if not value:
        return None
    if not is_event_id(value):
        return json_error(
            400, "invalid Last-Event-ID", detail="expected the id of an event of this stream"
        )
    return value


async def event_messages(
    bus: EventBus, tenant: str, last_id: str | None
) -> AsyncIterator[SseMessage]:
    """The tenant's events as SSE messages: `/api/events` and the console's stream."""
    events = bus.subscribe(tenant, last_id)
    try:
        async for event in events:
            yield SseMessage(event.id, event.kind, event.model_dump_json().encode())
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def api_events(request: web.Request) -> web.StreamResponse:
    found = authorized(request)
    if isinstance(found, web.Response):
        return found
    _, principal = found
    return await tenant_events(request, principal.tenant)


async def tenant_events(request: web.Request, tenant: str) -> web.StreamResponse:
    """The tenant's live events as SSE from the request's Last-Event-ID, within the
    tenant's bound of open streams: the API's and the console's stream alike."""
    last_id = last_event_id(request)
    if isinstance(last_id, web.Response):
        return last_id
    config = request.config_dict
    with config[STREAMS].hold(tenant) as admitted:
        if not admitted:
            return too_many_streams()
        return await stream_events(
            request,
            event_messages(config[EVENTS], tenant, last_id),
            keepalive=config[SETTINGS].events_keepalive.total_seconds(),
            closing=config[CLOSING],
        )
