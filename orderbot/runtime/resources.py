"""Connections a process opens at start, as async context managers.

Redis and PostgreSQL clients connect lazily or retry, so a process that starts
while a dependency is down waits for it instead of crash-looping under pm2.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import structlog
from redis.asyncio import Redis

from orderbot.config.settings import Settings
from orderbot.runtime.waiting import sleep_unless_set

log = structlog.get_logger(__name__)


@contextlib.asynccontextmanager
async def open_redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_timeout=5,
        socket_connect_timeout=2,
        health_check_interval=10,
        retry_on_timeout=False,
    )
    try:
        yield client
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def open_postgres(
    settings: Settings, *, max_size: int, stop: asyncio.Event
) -> AsyncIterator[asyncpg.Pool | None]:
    """A pool once PostgreSQL answers; None if the process was stopped while waiting."""
    delay = 0.2
    while True:
        if stop.is_set():
            yield None
            return
        try:
            pool = await asyncpg.create_pool(
                settings.database_url, min_size=1, max_size=max_size, command_timeout=10
            )
            break
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            if isinstance(exc, asyncpg.InvalidCatalogNameError):
                raise  # the database does not exist: `orderbot migrate` was not run
            log.warning("postgres_connect_failed", error=str(exc), retry_in=delay)
            await sleep_unless_set(delay, stop)
            delay = min(delay * 2, 5.0)
    try:
        yield pool
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def open_http(settings: Settings) -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=settings.send_timeout.total_seconds())
    connector = aiohttp.TCPConnector(limit=100, limit_per_host=50, ttl_dns_cache=300)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        yield session
