"""The webhook server: app factory, its resources as cleanup contexts, and its run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from orderbot.amqp.link import BrokerLink
from orderbot.config.settings import ConfigError, Settings
from orderbot.orders.live import live_events
from orderbot.runtime import metrics
from orderbot.runtime.ops import serve_ops
from orderbot.runtime.resources import open_redis, postgres_options
from orderbot.runtime.roles import SERVER
from orderbot.runtime.waiting import until_set_or_stopped
from server.connections import listen
from server.errors import server_middleware
from server.ingest import Ingest
from server.keys import (
    BROKER,
    CLOSING,
    EVENTS,
    INGEST,
    POSTGRES,
    READ_TIMEOUT,
    REDIS,
    SETTINGS,
    STREAMS,
)
from server.processes import check_processes, process_index, siblings, spool_name
from server.routes import server_probes, setup_routes
from server.spool import Drain, open_spool
from server.sse import StreamSlots
from server.tenancy import tenants_ctx

log = structlog.get_logger(__name__)


def check_settings(settings: Settings) -> None:
    """The settings' Twilio channel needs PUBLIC_BASE_URL: the URL a signature is checked
    against must not come from the request, whose Host header the caller chooses."""
    if settings.twilio_credentials() is not None and not settings.public_base_url:
        raise ConfigError("PUBLIC_BASE_URL is required with TWILIO_* (the URL Twilio signs)")
    check_processes(settings)


async def _broker_ctx(app: web.Application) -> AsyncIterator[None]:
    async with BrokerLink(app[SETTINGS], "server") as broker:
        app[BROKER] = broker
        yield


async def _edge_ctx(app: web.Application) -> AsyncIterator[None]:
    """The spool and its drain: open before the first request, so that a webhook that
    comes before the first broker connection is spooled, not refused."""
    settings, broker = app[SETTINGS], app[BROKER]
    name = spool_name(settings)
    async with open_spool(settings.spool_dir, name, max_bytes=settings.spool_max_bytes) as spool:
        app[INGEST] = Ingest(broker, spool)
        metrics.SPOOL_DEPTH.set_function(lambda: spool.depth)
        metrics.SPOOL_OLDEST_SECONDS.set_function(spool.oldest_age)
        drain = Drain(spool, broker, ready=lambda: broker.is_ready)
        task = asyncio.create_task(drain.run(), name="spool-drain")
        try:
            yield
        finally:
            drain.stop()
            await asyncio.gather(task, return_exceptions=True)


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_redis(app[SETTINGS]) as redis:
        app[REDIS] = redis
        app[EVENTS] = live_events(redis, app[SETTINGS])
        yield


async def _end_event_streams(app: web.Application) -> None:
    """Before the runner waits for in-flight requests: an event stream never ends by
    itself, and would hold the shutdown for SHUTDOWN_TIMEOUT."""
    app[CLOSING].set()


async def _postgres_ctx(app: web.Application) -> AsyncIterator[None]:
    # Only /health/ready uses it; min_size=0 lets the server start while the
    # database is down and report that, rather than refuse to serve webhooks.
    pool = asyncpg.create_pool(
        app[SETTINGS].database_url,
        min_size=0,
        max_size=2,
        command_timeout=2,
        **postgres_options(app[SETTINGS]),
    )
    await pool
    app[POSTGRES] = pool
    try:
        yield
    finally:
        await pool.close()


def handler_args(settings: Settings) -> dict[str, Any]:
    """Arguments of aiohttp's per-connection protocol. Set on the app, not on the runner,
    so that every server of it (the test server too) behaves like production."""
    return {
        # Compressed bodies are refused (server_middleware): never inflate one.
        "auto_decompress": False,
        # aiohttp's default is an hour; it also bounds a connection that never
        # completes its request line and headers.
        "keepalive_timeout": settings.http_keepalive_timeout.total_seconds(),
    }


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        client_max_size=settings.http_max_body,
        middlewares=[server_middleware],
        handler_args=handler_args(settings),
    )
    app[SETTINGS] = settings
    app[READ_TIMEOUT] = settings.http_read_timeout.total_seconds()
    app[CLOSING] = asyncio.Event()
    app[STREAMS] = StreamSlots(settings.events_max_streams)
    app.on_shutdown.append(_end_event_streams)
    app.cleanup_ctx.extend([_broker_ctx, _edge_ctx, _redis_ctx, _postgres_ctx, tenants_ctx])
    setup_routes(app)
    return app


def make_runner(settings: Settings) -> web.AppRunner:
    """The app as production serves it (tests serve it so too: aiohttp's test server
    differs, e.g. it cancels a handler whose client hung up)."""
    return web.AppRunner(
        create_app(settings),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=settings.shutdown_timeout.total_seconds(),
    )


async def run_server(settings: Settings, stop: asyncio.Event) -> None:
    """Serve until stopped; then stop accepting, finish in-flight requests, close. With
    SERVER_PROCESSES > 1 the first process starts the others once it listens, and on
    stop has them drain while it drains itself (server/processes.py)."""
    runner = make_runner(settings)
    await runner.setup()
    try:
        listener = await listen(
            runner,
            settings.http_host,
            settings.http_port,
            settings.http_max_connections,
            reuse_port=settings.server_processes > 1,
        )
    except BaseException:
        await runner.cleanup()
        raise
    log.info("listening", host=settings.http_host, port=settings.http_port, process=process_index())
    async with siblings(settings) as others:
        try:
            async with serve_ops(settings, SERVER, lambda: server_probes(runner.app)):
                await until_set_or_stopped(others.failed if others else asyncio.Event(), stop)
        finally:
            if others is not None:
                others.stop()  # they drain while this one does; leaving waits for them
            listener.close()  # stop accepting; the runner drains what is in flight
            await runner.cleanup()
    if others is not None and others.failure is not None:
        raise others.failure
