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

_TRANSIENT: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,  # a replica after failover
    redis.exceptions.OutOfMemoryError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, pg_terminate_backend
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.TransactionRollbackError,  # serialization failure, deadlock
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # a standby after failover
    asyncpg.exceptions.ConnectionDoesNotExistError,
    BrokerUnavailable,
    LockLost,
    ConnectionError,
    TimeoutError,
    OSError,
)
# Redis answers these as plain errors while it cannot write for a while.
_REDIS_BUSY_PREFIXES = ("MISCONF", "BUSY", "TRYAGAIN", "LOADING", "CLUSTERDOWN")


def is_transient(exc: BaseException) -> bool:
    """Will the same operation likely succeed once a dependency recovers?"""
    if isinstance(exc, asyncpg.exceptions._base.DataError):
        return False  # asyncpg's own encoding error: a bug, however often retried
    if isinstance(exc, _TRANSIENT):
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        return "connection" in str(exc).lower()  # e.g. "connection is closed"
    if isinstance(exc, redis.exceptions.ResponseError):
        return str(exc).startswith(_REDIS_BUSY_PREFIXES)
    if isinstance(exc, RuntimeError):
        # uvloop's word for a write to a connection the peer closed (redis-py and
        # asyncpg pass it on unchanged); any other RuntimeError is a bug.
        return "the handler is closed" in str(exc)
    return False


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
        except Exception as exc:
            if not is_transient(exc):
                raise
            if stop.is_set():
                raise Stopping(f"stopping while a dependency is unavailable: {exc!r}") from exc
            log.warning("dependency_unavailable", error=repr(exc), retry_in=round(delay, 3))
            try:
                async with asyncio.timeout(delay):
                    await stop.wait()
            except TimeoutError:
                pass
            delay = min(delay * 2, max_delay)
