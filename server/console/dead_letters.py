"""The tenant's dead-letter queue, and replaying it, as `orderbot dlq` does.

The DLQ is one queue for every tenant; the console reads it with the CLI's own tools
(orderbot/amqp/dlq.py), passing the operator's tenant, so an operator sees and replays
only messages parked with that tenant's header. Messages parked without one (unreadable
bodies) belong to no tenant: the deployment's operator replays them with the CLI.
"""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from orderbot.amqp import dlq
from server.console.access import page, posted_form, signed_in
from server.keys import BROKER

log = structlog.get_logger(__name__)

# Read at most this many parked messages per page: each is held unacked while it is read.
LIST_LIMIT = 500
BROKER_WAIT = 5.0


def _broker_down(request: web.Request) -> web.Response:
    response = page(request, "error.html", {"message": "the broker is unavailable"}, 503)
    response.headers["Retry-After"] = "5"
    return response


async def dead_letters(request: web.Request) -> web.Response:
    operator = await signed_in(request)
    broker = request.config_dict[BROKER]
    try:
        async with asyncio.timeout(BROKER_WAIT):
            parked = await dlq.list_parked(broker, limit=LIST_LIMIT, tenant=operator.tenant)
    except TimeoutError:
        return _broker_down(request)
    replayed = request.query.get("replayed")
    context = {"parked": parked, "replayed": replayed if (replayed or "").isdigit() else None}
    return page(request, "dlq.html", context, operator=operator)


async def replay(request: web.Request) -> web.StreamResponse:
    operator = await signed_in(request)
    form = await posted_form(request, operator)
    if isinstance(form, web.Response):
        return form
    message_id = form.get("message_id")
    every = form.get("all") == "1"
    if not every and not (isinstance(message_id, str) and 0 < len(message_id) <= 200):
        return page(request, "error.html", {"message": "no message chosen"}, 422)
    broker = request.config_dict[BROKER]
    try:
        async with asyncio.timeout(BROKER_WAIT * 2):
            count = await dlq.replay(
                broker,
                message_id=None if every else str(message_id),
                limit=LIST_LIMIT,
                tenant=operator.tenant,
            )
    except TimeoutError:
        return _broker_down(request)
    log.info("console_dlq_replayed", tenant=operator.tenant, count=count)
    raise web.HTTPSeeOther(f"/console/dlq?replayed={count}")
