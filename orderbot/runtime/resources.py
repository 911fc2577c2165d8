"""Connections a process opens at start, as async context managers.

Redis and PostgreSQL clients connect lazily or retry, so a process that starts
while a dependency is down waits for it instead of crash-looping under pm2.

With REDIS_SENTINELS the Redis client is Sentinel's: each new connection asks the
Sentinels for the current master, a connection to a master that was demoted is
dropped at its first write (redis-py turns the READONLY answer into a ConnectionError),
and a connection attempt is retried a few times with a short backoff before the error
reaches the caller, who treats it as any Redis outage (waits, then retries the step).
Every asyncpg connection takes DATABASE_STATEMENT_CACHE_SIZE, so that 0 makes the
processes work through PgBouncer in transaction pooling mode.

A pool connection goes back without asyncpg's session reset (`RESET ALL`, `UNLISTEN *`,
advisory unlock, `CLOSE ALL`): a round trip on every release, for state nothing of ours
leaves on a pool connection (LISTEN has a session of its own, settings are set for the
transaction, advisory locks are transaction locks). asyncpg still rolls back a
transaction left open.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import asyncpg
import structlog
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff

from orderbot.config.settings import Settings
from orderbot.runtime.waiting import sleep_unless_set

log = structlog.get_logger(__name__)


_REDIS_OPTIONS: dict[str, Any] = {
    "decode_responses": True,
    "socket_timeout": 5,
    "socket_connect_timeout": 2,
    "health_check_interval": 10,
    "retry_on_timeout": False,
}


@contextlib.asynccontextmanager
async def open_redis(settings: Settings) -> AsyncIterator[Redis]:
    """The process's one Redis client: REDIS_URL's server, or the Sentinels' master."""
    if not settings.redis_sentinels:
        client = Redis.from_url(settings.redis_url, **_REDIS_OPTIONS)
        try:
            yield client
        finally:
            await client.aclose()
        return
    sentinel = sentinel_for(settings)
    # REDIS_URL still says which database and the master's password; its host is unused.
    url = urlsplit(settings.redis_url)
    database = int(url.path.strip("/") or 0)
    client = sentinel.master_for(
        settings.redis_sentinel_master,
        db=database,
        username=unquote(url.username) if url.username else None,
        password=unquote(url.password) if url.password else None,
        # Bounded: about 1.5 s of attempts, while the Sentinels elect a new master.
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=5),
        **_REDIS_OPTIONS,
    )
    try:
        yield client
    finally:
        await client.aclose()
        for node in sentinel.sentinels:
            await node.aclose()


def sentinel_for(settings: Settings) -> Sentinel:
    password = settings.redis_sentinel_password
    return Sentinel(  # type: ignore[no-untyped-call]
        settings.sentinel_nodes(),
        sentinel_kwargs={
            "socket_timeout": 1,
            "socket_connect_timeout": 1,
            "decode_responses": True,
            "password": password.get_secret_value() if password else None,
        },
    )


def postgres_options(settings: Settings) -> dict[str, Any]:
    """What every asyncpg connection and pool of the processes is opened with."""
    return {"statement_cache_size": settings.database_statement_cache_size}


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
                settings.database_url,
                min_size=1,
                max_size=max_size,
                command_timeout=10,
                reset=_keep_session,
                **postgres_options(settings),
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


async def _keep_session(_connection: asyncpg.Connection) -> None:
    """The pool's reset after asyncpg's own rollback of an open transaction: nothing."""


@contextlib.asynccontextmanager
async def open_http(settings: Settings) -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=settings.send_timeout.total_seconds())
    connector = aiohttp.TCPConnector(limit=100, limit_per_host=50, ttl_dns_cache=300)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        yield session
