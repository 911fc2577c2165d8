"""Every error the server gives is a JSON body with a clear reason, never a traceback.

Providers and operators read these bodies; a stable shape (`error`, optional
`detail`) beats aiohttp's default text pages, and nothing from the request that
might hold a secret (the token path segment) is echoed back.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from orderbot import metrics

log = structlog.get_logger(__name__)


def json_error(
    status: int, error: str, *, detail: Any = None, headers: dict[str, str] | None = None
) -> web.Response:
    body: dict[str, Any] = {"error": error}
    if detail is not None:
        body["detail"] = detail
    return web.json_response(body, status=status, headers=headers)


_REJECTION = {
    400: "malformed",
    404: "not_found",
    405: "bad_method",
    413: "too_large",
    500: "internal_error",
}


@web.middleware
async def webhook_metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and time every webhook request, whatever its outcome."""
    parts = request.path.split("/")
    if len(parts) < 3 or parts[1] != "webhook":
        return await handler(request)
    provider = parts[2]
    metrics.WEBHOOKS_RECEIVED.labels(provider).inc()
    started = time.perf_counter()
    try:
        response = await handler(request)
    finally:
        metrics.WEBHOOK_SECONDS.labels(provider).observe(time.perf_counter() - started)
    if response.status in _REJECTION:
        metrics.WEBHOOKS_REJECTED.labels(provider, _REJECTION[response.status]).inc()
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = {413: "request body too large", 404: "not found", 405: "method not allowed"}
        return json_error(
            exc.status,
            reason.get(exc.status, exc.reason),
            headers={k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")},
        )
    except Exception:
        log.exception("request_failed", path=request.rel_url.path.split("/webhook/")[0])
        return json_error(500, "internal error")
