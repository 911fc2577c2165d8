"""Ending a background task that was told to stop."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

GRACE = 5.0  # seconds a background task gets to end by itself before it is cancelled


async def finish(task: asyncio.Task[Any], grace: float = GRACE) -> None:
    """Give `task`, already told to stop, `grace` seconds to end by itself, then cancel
    it; never raises its outcome (each task logs its own failure)."""
    if not task.done():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), timeout=grace)
    if not task.done():
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)
