"""Waiting for something that may never come, while the process may be asked to stop."""

from __future__ import annotations

import asyncio
import contextlib


async def until_set_or_stopped(event: asyncio.Event, stop: asyncio.Event) -> bool:
    """Wait until `event` or `stop` is set; True if `event` is. A process waiting for a
    dependency at start must still answer SIGTERM at once (guarantee 7)."""
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
