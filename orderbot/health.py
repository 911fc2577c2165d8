"""Readiness: can this process reach what it needs, answered within a bounded time.

Each dependency is checked concurrently under its own timeout, so a hanging Redis
makes the answer 503 after a second instead of making the probe itself hang.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
from redis.asyncio import Redis

from orderbot.broker import BrokerLink

CHECK_TIMEOUT = 1.0


async def _check(probe: Callable[[], Awaitable[object]]) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await probe()
    except TimeoutError:
        return "timeout"
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    return "ok"


async def readiness(
    *, broker: BrokerLink, redis: Redis, pool: asyncpg.Pool | None
) -> tuple[bool, dict[str, str]]:
    """Check each dependency the process uses (`pool` None: it uses no database)."""

    async def broker_probe() -> None:
        if not broker.is_ready:
            raise ConnectionError("broker not connected")

    async def redis_probe() -> None:
        await redis.ping()

    probes: dict[str, Callable[[], Awaitable[object]]] = {
        "broker": broker_probe,
        "redis": redis_probe,
    }
    if pool is not None:
        probes["postgres"] = lambda: pool.fetchval("SELECT 1")
    results = await asyncio.gather(*(_check(probe) for probe in probes.values()))
    checks = dict(zip(probes, results, strict=True))
    return all(v == "ok" for v in checks.values()), checks
