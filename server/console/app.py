"""The console's routes and resources, mounted under /console by server/routes.py.

A sub-application, so that its headers (CSP, no framing, no caching) wrap its pages and
nothing else: the webhooks' hot path gets no extra middleware.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp_jinja2
import jinja2
import structlog
from aiohttp import web

from orderbot.conversation.keys import Keys
from server.console import dead_letters, live, orders, signin
from server.console.access import unavailable_as_page
from server.console.guard import SignInThrottle, security_headers
from server.console.state import Console
from server.keys import API, CONSOLE, REDIS, SETTINGS

log = structlog.get_logger(__name__)

STATIC = Path(__file__).resolve().parent.parent / "static" / "console"


# What a status is called on the board, and on the button that moves an order to it.
STATUS_LABELS = {
    "CONFIRMED": "Confirmed",
    "PREPARING": "Preparing",
    "OUT_FOR_DELIVERY": "Out for delivery",
    "DELIVERED": "Delivered",
    "RATED": "Rated",
    "CANCELLED": "Cancelled",
}
MOVE_LABELS = {
    "PREPARING": "Start preparing",
    "OUT_FOR_DELIVERY": "Send out",
    "DELIVERED": "Delivered",
    "CANCELLED": "Cancel",
}


def console_app() -> web.Application:
    app = web.Application(middlewares=[security_headers])
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("server", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )
    env.globals.update(status_labels=STATUS_LABELS, move_labels=MOVE_LABELS)
    route = app.router
    route.add_get("/", unavailable_as_page(orders.board))
    route.add_get("/login", unavailable_as_page(signin.login_page))
    route.add_post("/login", unavailable_as_page(signin.login))
    route.add_post("/logout", unavailable_as_page(signin.logout))
    route.add_get("/orders/{order_id}", unavailable_as_page(orders.order))
    route.add_get("/orders/{order_id}/card", unavailable_as_page(orders.order_card))
    route.add_post("/orders/{order_id}/status", unavailable_as_page(orders.move))
    route.add_get("/events", unavailable_as_page(live.console_events))
    route.add_get("/dlq", unavailable_as_page(dead_letters.dead_letters))
    route.add_post("/dlq/replay", unavailable_as_page(dead_letters.replay))
    route.add_static("/static", STATIC, append_version=False)
    return app


async def _to_board(_: web.Request) -> web.StreamResponse:
    raise web.HTTPMovedPermanently("/console/")


async def _console_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    secrets = tuple(settings.console_session_secrets())
    if not secrets or app.get(API) is None:
        log.info("console_disabled", reason="needs CONSOLE_SESSION_SECRET and the operator API")
        yield
        return
    keys = Keys(settings.redis_key_prefix)
    app[CONSOLE] = Console(
        secrets=secrets,
        ttl_seconds=settings.console_session_ttl.total_seconds(),
        throttle=SignInThrottle(app[REDIS], keys, settings.console_signin_attempts),
        keys=keys,
        public_base_url=settings.public_base_url,
    )
    yield


def register_console(app: web.Application) -> None:
    """Mount the console; after the operator API, whose keys and rules it uses."""
    app.cleanup_ctx.append(_console_ctx)
    app.router.add_get("/console", _to_board)
    app.add_subapp("/console", console_app())
