"""A role of orderbot run as a task of the test's own process, stopped as SIGTERM would."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from orderbot.config.settings import Settings

RoleEntry = Callable[[Settings, asyncio.Event], Coroutine[Any, Any, None]]


@contextlib.asynccontextmanager
async def in_process(role: RoleEntry, settings: Settings) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(role(settings, stop))
    yield task
    stop.set()
    await asyncio.wait_for(task, 30)
