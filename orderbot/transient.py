"""Waiting out a dependency outage instead of burning through the delivery limit.

A message that fails because Redis, PostgreSQL or the broker is briefly gone is not
poison: nacking it would requeue it at once, count a delivery, and after
`MESSAGES_DELIVERY_LIMIT` such failures park a healthy message in the DLQ. So the
step is retried in place with backoff until the dependency answers, or until the
process is asked to stop (then the message is left unacknowledged for redelivery).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import redis.exceptions
import structlog

from orderbot.broker import BrokerUnavailable
from orderbot.dialog_store import LockLost

log = structlog.get_logger(__name__)

T = TypeVar("T")

TRANSIENT: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    BrokerUnavailable,
    LockLost,
    ConnectionError,
    TimeoutError,
    OSError,
)


class Stopping(Exception):
    """The process is shutting down while a dependency is still unavailable."""


async def until_done(
    operation: Callable[[], Awaitable[T]],
    stop: asyncio.Event,
    *,
    max_delay: float = 5.0,
) -> T:
    delay = 0.05
    while True:
        try:
            return await operation()
        except TRANSIENT as exc:
            if stop.is_set():
                raise Stopping(f"stopping while a dependency is unavailable: {exc!r}") from exc
            log.warning("dependency_unavailable", error=repr(exc), retry_in=round(delay, 3))
            try:
                async with asyncio.timeout(delay):
                    await stop.wait()
            except TimeoutError:
                pass
            delay = min(delay * 2, max_delay)
