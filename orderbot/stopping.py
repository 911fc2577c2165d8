"""Waiting for something that may never come, while the process may be asked to stop."""

from __future__ import annotations

import asyncio


async def until_set_or_stopped(event: asyncio.Event, stop: asyncio.Event) -> bool:
    """Wait until `event` or `stop` is set; True if `event` is. A process waiting for a
    dependency at start must still answer SIGTERM at once (guarantee 7)."""
    if not event.is_set():
        waiters = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())}
        _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()
    return event.is_set()
