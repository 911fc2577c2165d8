"""Every error the server gives is a JSON body with a clear reason, never a traceback.

Providers and operators read these bodies; a stable shape (`error`, optional
`detail`) beats aiohttp's default text pages, and nothing from the request that
might hold a secret (the token path segment) is echoed back.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from orderbot.runtime import metrics
from server.keys import READ_TIMEOUT

log = structlog.get_logger(__name__)


def json_error(
    status: int, error: str, *, detail: Any = None, headers: dict[str, str] | None = None
) -> web.Response:
    body: dict[str, Any] = {"error": error}
    if detail is not None:
        body["detail"] = detail
    return web.json_response(body, status=status, headers=headers)


CLIENT_CLOSED = 499

_REJECTION = {
    400: "malformed",
    404: "not_found",
    405: "bad_method",
    408: "timeout",
    413: "too_large",
    # Not sent (nobody is there to read it): the status of a request whose client hung
    # up before we could answer, as nginx logs it.
    CLIENT_CLOSED: "client_disconnected",
    500: "internal_error",
}


_ERROR_TEXT = {413: "request body too large", 404: "not found", 405: "method not allowed"}
_EXPOSED_HEADERS = ("Allow", "Retry-After")


class _WebhookMetrics:
    """A provider's metric children, taken once: `.labels()` is a lock and a dict
    lookup each, on the path every webhook takes. Created on first use, so a provider
    that never posts shows no series (the exact-count tests rely on that)."""

    __slots__ = ("received", "seconds")

    def __init__(self, provider: str) -> None:
        self.received = metrics.WEBHOOKS_RECEIVED.labels(provider)
        self.seconds = metrics.WEBHOOK_SECONDS.labels(provider)


_webhook_metrics: dict[str, _WebhookMetrics] = {}
# The label is a closed set: any stranger can post to /webhook/<anything>, and each new
# label value would be a score of series the server keeps and serves on every scrape.
PROVIDERS = frozenset({"chat2desk", "twilio"})
UNKNOWN_PROVIDER = "unknown"


def provider_label(segment: str) -> str:
    """The metric label of a /webhook/<segment> path: a provider we serve, or `unknown`."""
    return segment if segment in PROVIDERS else UNKNOWN_PROVIDER


def _metrics_of(provider: str) -> _WebhookMetrics:
    found = _webhook_metrics.get(provider)
    if found is None:
        found = _webhook_metrics.setdefault(provider, _WebhookMetrics(provider))
    return found


@web.middleware
async def server_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as a JSON body; every webhook request counted and timed, whatever
    its outcome (errors included, as their JSON answer). One middleware, not two: each
    is a coroutine and a handler wrapper per request."""
    path = request.path
    if not path.startswith("/webhook/"):
        return _encoded(request) or await _answer(request, handler)
    provider = provider_label(path.split("/", 3)[2])
    counted = _metrics_of(provider)
    counted.received.inc()
    started = time.perf_counter()
    try:
        refused = _encoded(request)
        if refused is not None:
            metrics.WEBHOOKS_REJECTED.labels(provider, "invalid").inc()
            return refused
        response = await _answer(request, handler)
    finally:
        counted.seconds.observe(time.perf_counter() - started)
    rejection = _REJECTION.get(response.status)
    if rejection is not None:
        metrics.WEBHOOKS_REJECTED.labels(provider, rejection).inc()
    return response


async def _read_body(request: web.Request) -> web.Response | None:
    """Read the whole body (handlers then get it from aiohttp's cache) within
    HTTP_READ_TIMEOUT, or a 408. aiohttp has no such bound: a client trickling a byte
    a minute held its connection and handler for as long as it liked."""
    try:
        async with asyncio.timeout(request.app[READ_TIMEOUT]):
            await request.read()
    except TimeoutError:
        log.info("request_body_timeout", path=_safe_path(request))
        response = json_error(408, "request body not received in time")
        response.force_close()
        return response
    return None


def _encoded(request: web.Request) -> web.Response | None:
    """A 415 for a compressed body, before anything reads it. No provider compresses
    its webhooks and the operator API's bodies are tiny, while a small gzip can
    inflate to gigabytes: a stranger's bomb would cost CPU before the token is even
    checked. The server does not decompress at all (`auto_decompress` off), so this
    refusal is what a client sees instead of a body that does not parse."""
    encoding = request.headers.get(hdrs.CONTENT_ENCODING)
    if encoding is None or encoding.strip().lower() in ("", "identity"):
        return None
    response = json_error(415, "compressed bodies are not accepted")
    response.force_close()  # do not read (or wait for) the rest of it
    return response


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        # A body that came whole with its headers (every webhook in practice) needs no
        # deadline to be read; setting one up cost more than the rest of the read.
        if request.body_exists and not request.content.is_eof():
            slow = await _read_body(request)
            if slow is not None:
                return slow
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_error(
            exc.status,
            _ERROR_TEXT.get(exc.status, exc.reason),
            headers={k: v for k, v in exc.headers.items() if k in _EXPOSED_HEADERS},
        )
    except Exception as exc:
        if isinstance(exc, ConnectionError) and _client_gone(request):
            # The client hung up mid-body (aiohttp fails the read with a
            # ConnectionResetError): theirs, not ours, so neither a traceback nor a
            # server error for the alerts.
            log.info("client_disconnected", path=_safe_path(request))
            return json_error(CLIENT_CLOSED, "client disconnected")
        log.exception("request_failed", path=_safe_path(request))
        return json_error(500, "internal error")


def _client_gone(request: web.Request) -> bool:
    """Whether the request's own connection is closed; a ConnectionError from a
    dependency (a refused connect, say) while the client waits is still ours."""
    transport = request.transport
    return transport is None or transport.is_closing()


def _safe_path(request: web.Request) -> str:
    """The path up to the webhook segments, which may hold a token."""
    return request.rel_url.path.split("/webhook/")[0]
