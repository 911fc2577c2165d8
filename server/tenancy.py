"""The server's tenant directory: an app key and its cleanup context.

Kept apart from the handlers so both webhooks and the app factory can import it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from orderbot.runtime import metrics
from orderbot.tenancy.directory import open_tenant_directory
from server.errors import json_error
from server.keys import SETTINGS, TENANTS


async def tenants_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_tenant_directory(app[SETTINGS], "server") as directory:
        app[TENANTS] = directory
        yield


def tenant_unavailable(provider: str) -> web.Response:
    """A tenant not read yet (or whose row does not decrypt with this process's master
    key): a 503 makes the provider retry, where a 403 or 404 would lose the message."""
    metrics.WEBHOOKS_REJECTED.labels(provider, "tenants_unavailable").inc()
    return json_error(503, "tenant not available, retry later", headers={"Retry-After": "5"})
