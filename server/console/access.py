"""Who may see a console page, and what every page is rendered with.

A page handler asks for the signed-in operator (`signed_in`): no valid session sends the
browser to the sign-in page. A state-changing handler asks `posted_form`, which also
wants the session's CSRF token and a same-origin Origin.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp_jinja2
import structlog
from aiohttp import web
from multidict import MultiDictProxy

from orderbot.errors import is_transient
from server.api import OperatorApi
from server.auth import Principal
from server.console.guard import same_origin
from server.console.session import COOKIE, ConsoleSession, current_key_fingerprints, unseal
from server.console.state import Console
from server.keys import API, CONSOLE, REDIS, SETTINGS, TENANTS

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SIGN_IN = "/console/login"


class Operator:
    """The signed-in operator of a request, with what handlers act through."""

    def __init__(self, session: ConsoleSession, api: OperatorApi) -> None:
        self.session = session
        self.api = api
        self.principal = Principal(tenant=session.tenant, name=session.name)

    @property
    def tenant(self) -> str:
        return self.session.tenant


def console_of(request: web.Request) -> Console | None:
    return request.config_dict.get(CONSOLE)


async def current_session(request: web.Request) -> ConsoleSession | None:
    """The request's session if its cookie is genuine, unexpired, not signed out, and
    made with a key that still opens its tenant."""
    console = console_of(request)
    if console is None:
        return None
    session = unseal(request.cookies.get(COOKIE), console.secrets)
    if session is None:
        return None
    settings, tenants = request.config_dict[SETTINGS], request.config_dict.get(TENANTS)
    if session.key not in current_key_fingerprints(settings, tenants, session.tenant):
        return None
    redis = request.config_dict[REDIS]
    if await redis.exists(console.keys.console_signed_out(session.id)):
        return None
    return session


async def signed_in(request: web.Request) -> Operator:
    """The operator, or a redirect to the sign-in page (raised)."""
    api = request.config_dict.get(API)
    session = await current_session(request)
    if session is None or api is None:
        raise web.HTTPSeeOther(SIGN_IN)
    return Operator(session, api)


async def posted_form(
    request: web.Request, operator: Operator
) -> MultiDictProxy[str | bytes | Any] | web.Response:
    """The form of a same-origin POST carrying the session's CSRF token, or a 403 page."""
    console = console_of(request)
    if console is None or not same_origin(request, console.public_base_url):
        return page(request, "error.html", {"message": "cross-site request refused"}, 403)
    form = await read_form(request)
    if form is None:
        return unreadable_form(request)
    token = form.get("csrf")
    if not operator.session.csrf_matches(token if isinstance(token, str) else None):
        return page(
            request,
            "error.html",
            {"message": "this form has expired: reload the page and try again"},
            403,
        )
    return form


async def read_form(request: web.Request) -> MultiDictProxy[str | bytes | Any] | None:
    """The posted form, or None for a body no form of ours sends (a broken multipart,
    bytes that are not UTF-8)."""
    try:
        return await request.post()
    except ValueError:  # UnicodeDecodeError included
        return None


def unreadable_form(request: web.Request) -> web.Response:
    return page(request, "error.html", {"message": "unreadable form"}, 400)


def page(
    request: web.Request,
    template: str,
    context: Mapping[str, Any],
    status: int = 200,
    operator: Operator | None = None,
) -> web.Response:
    values = dict(context)
    if operator is not None:
        values.setdefault("operator", operator)
        values.setdefault("csrf", operator.session.csrf)
    return aiohttp_jinja2.render_template(f"console/{template}", request, values, status=status)


def unavailable_as_page(handler: Handler) -> Handler:
    """A database or broker that is down is a page saying so, not a server error."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Exception as exc:
            if isinstance(exc, web.HTTPException) or not is_transient(exc):
                raise
            log.warning("console_unavailable", path=request.path, error=type(exc).__name__)
            response = page(
                request, "error.html", {"message": "a service is unavailable, retry soon"}, 503
            )
            response.headers["Retry-After"] = "5"
            return response

    return wrapped
