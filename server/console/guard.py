"""What keeps the console's pages safe in a browser: headers, same-origin posts, and a
bound on guessing a key at the sign-in.

Every state-changing request carries the session's CSRF token (checked by the handlers)
and an Origin of this site (checked here): SameSite=Strict already keeps the cookie off
cross-site requests, the token and the Origin check hold even where a browser does not.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler
from redis.asyncio import Redis

from orderbot.conversation.keys import Keys

# No inline script or style anywhere: every asset comes from /console/static.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
STATIC_PREFIX = "/console/static/"
SIGNIN_WINDOW = timedelta(minutes=15)


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Pages hold a tenant's orders and customers: never cached, never framed."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # redirects and errors get the headers too
        exc.headers.update(_HEADERS)
        exc.headers["Cache-Control"] = "no-store"
        raise
    if not response.prepared:
        response.headers.update(_HEADERS)
        if not request.path.startswith(STATIC_PREFIX):
            response.headers["Cache-Control"] = "no-store"
    return response


def same_origin(request: web.Request, public_base_url: str | None) -> bool:
    """Whether a POST comes from a page of this site: its Origin (or, lacking one, its
    Referer) is PUBLIC_BASE_URL's origin, or without that setting the request's own."""
    given = request.headers.get("Origin") or request.headers.get("Referer")
    if not given or given == "null":
        return False
    if public_base_url:
        expected = urlsplit(public_base_url)
        scheme, host = expected.scheme, expected.netloc
    else:
        scheme, host = request.scheme, request.host
    parts = urlsplit(given)
    return parts.scheme == scheme and parts.netloc == host


class SignInThrottle:
    """Sign-in attempts per client address in a fixed window, counted in Redis so that
    every server process shares the budget. Counted before the key is checked: a burst
    of guesses in flight at once is bounded too."""

    def __init__(self, redis: Redis, keys: Keys, attempts: int) -> None:
        self._redis = redis
        self._keys = keys
        self._attempts = attempts

    async def allow(self, address: str) -> tuple[bool, int]:
        """(whether this attempt may be checked, seconds until the window ends)."""
        key = self._keys.console_signin(address)
        window = int(SIGNIN_WINDOW.total_seconds())
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(key, 0, ex=window, nx=True)
            pipe.incr(key)
            pipe.ttl(key)
            _, count, ttl = await pipe.execute()
        return int(count) <= self._attempts, max(1, int(ttl))
