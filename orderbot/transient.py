"""Waiting out a dependency outage instead of burning through the delivery limit.

A message that fails because Redis, PostgreSQL or the broker is briefly gone is not
poison: nacking it would requeue it at once, count a delivery, and after
`MESSAGES_DELIVERY_LIMIT` such failures park a healthy message in the DLQ. So the
step is retried in place with backoff until the dependency answers, or until the
process is asked to stop (then the message is left unacknowledged for redelivery).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import redis.exceptions
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_when_event_set,
    wait_exponential,
)

from orderbot.broker import BrokerUnavailable
from orderbot.dialog_store import LockLost
from orderbot.stopping import sleep_unless_set

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


def _stopping(failure: BaseException | None) -> Stopping:
    return Stopping(f"stopping while a dependency is unavailable: {failure!r}")


async def until_done(
    operation: Callable[[], Awaitable[T]],
    stop: asyncio.Event,
    *,
    max_delay: float = 5.0,
) -> T:
    """`operation`'s result, retried with backoff (50 ms doubling to `max_delay`) while it
    fails for a transient reason; Stopping once the process is asked to stop. The first
    try is a plain call: this runs for every message, and tenacity's set-up is paid only
    when a dependency is actually down."""
    try:
        return await operation()
    except Exception as exc:
        if not is_transient(exc):
            raise
        if stop.is_set():
            raise _stopping(exc) from exc
        log.warning("dependency_unavailable", error=repr(exc), retry_in=0.05)

    def stopping(state: RetryCallState) -> T:
        failure = state.outcome.exception() if state.outcome else None
        raise _stopping(failure) from failure

    def warn(state: RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning("dependency_unavailable", error=repr(failure), retry_in=round(wait, 3))

    retrying = AsyncRetrying(
        sleep=functools.partial(sleep_unless_set, event=stop),
        # 100 ms doubling: the first wait (50 ms) was taken above, before tenacity.
        wait=wait_exponential(multiplier=0.1, exp_base=2, max=max_delay),
        retry=retry_if_exception(is_transient),
        stop=stop_when_event_set(stop),  # type: ignore[arg-type]  # only its is_set() is used
        before_sleep=warn,
        retry_error_callback=stopping,
        reraise=True,
    )

    async def attempt() -> T:
        # A coroutine function of our own: tenacity awaits only what it can tell is one,
        # and takes the coroutine a plain callable (a lambda, as the worker passes)
        # returns for the result, so the step would be acknowledged without being run.
        return await operation()

    await sleep_unless_set(0.05, stop)
    return await retrying(attempt)
