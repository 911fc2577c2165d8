"""The small HTTP server of the worker processes: /health, /health/ready, /metrics."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis

from orderbot.broker import BrokerLink
from orderbot.health import readiness
from orderbot.settings import Settings

log = structlog.get_logger(__name__)


def metrics_response() -> web.Response:
    response = web.Response(body=generate_latest())
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


@contextlib.asynccontextmanager
async def serve_ops(
    settings: Settings,
    *,
    default_port: int,
    broker: BrokerLink,
    redis: Redis,
    pool: asyncpg.Pool | None,
) -> AsyncIterator[None]:
    """Serve on METRICS_PORT (the role's default when unset; 0 turns it off)."""
    port = default_port if settings.metrics_port is None else settings.metrics_port
    if port == 0:
        yield
        return

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ready(_: web.Request) -> web.Response:
        ok, checks = await readiness(broker=broker, redis=redis, pool=pool)
        return web.json_response(
            {"status": "ok" if ok else "unavailable", "checks": checks},
            status=200 if ok else 503,
        )

    async def metrics(_: web.Request) -> web.Response:
        return metrics_response()

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, port)
    await site.start()
    log.info("ops_listening", port=port)
    try:
        yield
    finally:
        await runner.cleanup()
