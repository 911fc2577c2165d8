"""One call to a provider's list API: counted by outcome, its JSON body, or
ListUnavailable saying why (the provider's answer with our secrets masked, and its
Retry-After for the backoff)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp
import orjson

from orderbot.config.secret_forms import mask
from orderbot.delivery.sender import parse_retry_after
from orderbot.recovery.errors import ListUnavailable
from orderbot.runtime import metrics


async def call_json(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    provider: str,
    what: str,
    headers: Mapping[str, str],
    secret_forms: Iterable[str],
    params: Mapping[str, str | int] | None = None,
    data: bytes | None = None,
) -> Any:
    """The decoded body of `method url`; `what` names the call in errors."""
    try:
        async with session.request(
            method, url, params=params, data=data, headers=headers
        ) as response:
            raw = await response.read()
            if response.status >= 300:
                outcome = "throttled" if response.status == 429 else "error"
                metrics.RECONCILE_API_CALLS.labels(provider, outcome).inc()
                detail = mask(raw.decode(errors="replace"), secret_forms)[:300]
                raise ListUnavailable(
                    f"{provider} answered {response.status} to {what}: {detail}",
                    status=response.status,
                    retry_after=parse_retry_after(response.headers.get("Retry-After"), cap=600.0),
                )
    except (TimeoutError, aiohttp.ClientError) as exc:
        metrics.RECONCILE_API_CALLS.labels(provider, "error").inc()
        raise ListUnavailable(f"{provider} unreachable: {exc or type(exc).__name__}") from exc
    metrics.RECONCILE_API_CALLS.labels(provider, "ok").inc()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ListUnavailable(f"{provider} answered {what} with no JSON") from None
