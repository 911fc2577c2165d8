"""What every process answers to its supervisor: /health, /health/ready, /metrics.

The server adds these routes to its own app; the worker processes serve them on a
small app of their own (`serve_ops`). Readiness checks each dependency concurrently
under its own timeout, so a hanging Redis makes the answer 503 after a second instead
of making the probe itself hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Protocol

import asyncpg
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis

from orderbot.config.settings import ConfigError, Settings
from orderbot.runtime.roles import Role

log = structlog.get_logger(__name__)

CHECK_TIMEOUT = 1.0

Probe = Callable[[], Awaitable[object]]
Probes = Callable[[], Mapping[str, Probe]]


class Connected(Protocol):
    """A link that knows whether it can work right now (the broker link)."""

    @property
    def is_ready(self) -> bool: ...


def dependency_probes(
    *, broker: Connected, redis: Redis, pool: asyncpg.Pool | None
) -> dict[str, Probe]:
    """A probe per dependency the process uses (`pool` None: it uses no database)."""

    async def broker_probe() -> None:
        if not broker.is_ready:
            raise ConnectionError("broker not connected")

    async def redis_probe() -> None:
        await redis.ping()

    probes: dict[str, Probe] = {"broker": broker_probe, "redis": redis_probe}
    if pool is not None:
        probes["postgres"] = lambda: pool.fetchval("SELECT 1")
    return probes


async def _check(probe: Probe) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await probe()
    except TimeoutError:
        return "timeout"
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    return "ok"


async def readiness(probes: Mapping[str, Probe]) -> tuple[bool, dict[str, str]]:
    results = await asyncio.gather(*(_check(probe) for probe in probes.values()))
    checks = dict(zip(probes, results, strict=True))
    return all(v == "ok" for v in checks.values()), checks


async def health(_: web.Request) -> web.Response:
    """The process is alive (its event loop answers)."""
    return web.json_response({"status": "ok"})


def add_ops_routes(router: web.UrlDispatcher, probes: Probes) -> None:
    """/health, /health/ready (its dependencies answer: `probes` is asked on every
    request, so it may name objects made after the routes) and /metrics (this process's
    Prometheus registry)."""

    async def ready(_: web.Request) -> web.Response:
        ok, checks = await readiness(probes())
        return web.json_response(
            {"status": "ok" if ok else "unavailable", "checks": checks},
            status=200 if ok else 503,
        )

    async def metrics(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest())
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    router.add_get("/health", health)
    router.add_get("/health/ready", ready)
    router.add_get("/metrics", metrics)


@contextlib.asynccontextmanager
async def serve_ops(
    settings: Settings, role: Role, probes: Mapping[str, Probe] | Probes
) -> AsyncIterator[None]:
    """Serve the ops routes on the role's own port (METRICS_PORT over a worker's; 0: off),
    bound to METRICS_HOST: a public HTTP_HOST does not expose them. The server's port
    (SERVER_METRICS_PORT) is unset by default: it then serves them on HTTP_PORT."""
    setting = role.metrics_port_setting
    if settings.metrics_port is not None and role.metrics_port_override:
        setting = "metrics_port"
    port = getattr(settings, setting)
    if not port:
        yield
        return
    app = web.Application()
    add_ops_routes(app.router, probes if callable(probes) else lambda: probes)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.metrics_host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            f"cannot listen on {settings.metrics_host}:{port} ({str(setting).upper()}): "
            f"{os.strerror(exc.errno) if exc.errno else exc}"
        ) from None
    log.info("ops_listening", port=port)
    try:
        yield
    finally:
        await runner.cleanup()
