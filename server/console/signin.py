"""Signing in with the tenant's operator API key, and signing out.

The key is checked by the operator API's own authenticator (the same keys open the API
and the console) and exchanged for a session cookie: HttpOnly (no script reads it),
SameSite=Strict (no other site's request carries it), Secure where the site is https,
and as long-lived as CONSOLE_SESSION_TTL. Signing out also writes the session's id to
Redis until it would have expired, so a copy of the cookie is dead too.
"""

from __future__ import annotations

import structlog
from aiohttp import web

from server.console.access import (
    SIGN_IN,
    console_of,
    current_session,
    page,
    posted_form,
    read_form,
    signed_in,
    unreadable_form,
)
from server.console.guard import same_origin
from server.console.session import COOKIE, ConsoleSession, seal
from server.keys import API, REDIS

log = structlog.get_logger(__name__)

BOARD = "/console/"
_MAX_KEY = 512


async def login_page(request: web.Request) -> web.StreamResponse:
    if console_of(request) is None or request.config_dict.get(API) is None:
        return _refused(request, "the console is off on this server", 404)
    if await current_session(request) is not None:
        raise web.HTTPSeeOther(BOARD)
    return page(request, "login.html", {})


def _refused(request: web.Request, message: str, status: int) -> web.Response:
    return page(request, "login.html", {"error": message}, status)


async def login(request: web.Request) -> web.StreamResponse:
    console, api = console_of(request), request.config_dict.get(API)
    if console is None or api is None:
        return _refused(request, "the console is off on this server", 404)
    if not same_origin(request, console.public_base_url):
        return _refused(request, "cross-site sign-in refused", 403)
    allowed, retry_after = await console.throttle.allow(request.remote or "unknown")
    if not allowed:
        log.warning("console_signin_throttled", address=request.remote)
        response = _refused(request, "too many attempts: wait a few minutes", 429)
        response.headers["Retry-After"] = str(retry_after)
        return response
    form = await read_form(request)
    if form is None:
        return unreadable_form(request)
    key = form.get("key")
    principal = None
    if isinstance(key, str) and 0 < len(key.strip()) <= _MAX_KEY:
        principal = api.auth.authenticate(f"Bearer {key.strip()}")
    if principal is None or not isinstance(key, str):
        log.info("console_signin_refused", address=request.remote)
        return _refused(request, "that key opens no console", 401)
    session = ConsoleSession.start(
        tenant=principal.tenant, name=principal.name, api_key=key.strip(), ttl=console.ttl_seconds
    )
    log.info("console_signed_in", tenant=principal.tenant, session=session.id)
    response = web.HTTPSeeOther(BOARD)
    response.set_cookie(
        COOKIE,
        seal(session, console.secrets),
        max_age=int(console.ttl_seconds),
        path="/console",
        httponly=True,
        samesite="Strict",
        secure=request.secure or (console.public_base_url or "").startswith("https://"),
    )
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    operator = await signed_in(request)
    form = await posted_form(request, operator)
    if isinstance(form, web.Response):
        return form
    console = console_of(request)
    if console is not None:
        await request.config_dict[REDIS].set(
            console.keys.console_signed_out(operator.session.id),
            1,
            ex=max(1, operator.session.remaining()),
        )
    log.info("console_signed_out", tenant=operator.tenant, session=operator.session.id)
    response = web.HTTPSeeOther(SIGN_IN)
    response.del_cookie(COOKIE, path="/console")
    raise response
