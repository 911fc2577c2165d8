"""Waiting for something that may never come, while the process may be asked to stop.

A message that fails because Redis, PostgreSQL or the broker is briefly gone is not
poison: nacking it would requeue it at once, count a delivery, and after
`MESSAGES_DELIVERY_LIMIT` such failures park a healthy message in the DLQ. So the
step is retried in place with backoff (`until_done`) until the dependency answers, or
until the process is asked to stop (then the message is left unacknowledged for
redelivery). Every wait here is cut short by a stop: SIGTERM is answered at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_when_event_set,
    wait_exponential,
)

from orderbot.errors import Stopping, is_transient

log = structlog.get_logger(__name__)

T = TypeVar("T")


async def until_set_or_stopped(event: asyncio.Event, stop: asyncio.Event) -> bool:
    """Wait until `event` or `stop` is set; True if `event` is. A process waiting for a
    dependency at start must still answer SIGTERM at once."""
    if not event.is_set():
        waiters = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())}
        _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()
    return event.is_set()


async def sleep_unless_set(seconds: float, event: asyncio.Event) -> None:
    """Sleep `seconds`, or less if `event` is set meanwhile: a backoff that a stop (or a
    wake-up) cuts short instead of being waited out."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


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
