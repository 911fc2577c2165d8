"""The history's upkeep inside the outbox worker: every PURGE_INTERVAL, delete what is older
than HISTORY_RETENTION and apply delivery receipts that came before their reply's row.

Every outbox worker runs it; the deletes are idempotent, so two at once only share the work.
It waits for PostgreSQL in the background and never stops the outbox consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import structlog

from orderbot.config.settings import Settings
from orderbot.errors import is_transient
from orderbot.history import store
from orderbot.runtime.resources import open_postgres
from orderbot.runtime.waiting import sleep_unless_set

log = structlog.get_logger(__name__)

PURGE_INTERVAL = timedelta(hours=1)
RECEIPTS_INTERVAL = timedelta(seconds=30)


@contextlib.asynccontextmanager
async def history_purge_loop(settings: Settings, stop: asyncio.Event) -> AsyncIterator[None]:
    """Runs with HISTORY_ENABLED=false too: what was kept before still expires."""
    task = asyncio.create_task(_run(settings, stop), name="history-purge")
    try:
        yield
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _run(settings: Settings, stop: asyncio.Event) -> None:
    try:
        async with open_postgres(settings, max_size=1, stop=stop) as pool:
            if pool is None:
                return
            loop = asyncio.get_running_loop()
            next_purge = 0.0
            while not stop.is_set():
                if loop.time() >= next_purge:
                    next_purge = loop.time() + PURGE_INTERVAL.total_seconds()
                    await _quietly("history_purge", _purge(pool, settings.history_retention))
                await _quietly("history_receipts", _receipts(pool))
                await sleep_unless_set(RECEIPTS_INTERVAL.total_seconds(), stop)
    except Exception:
        log.exception("history_purge_stopped")


async def _purge(pool: asyncpg.Pool, retention: timedelta) -> None:
    messages, conversations = await store.purge(pool, retention)
    if messages or conversations:
        log.info("history_purged", messages=messages, conversations=conversations)


async def _receipts(pool: asyncpg.Pool) -> None:
    applied = await store.apply_waiting_receipts(pool)
    if applied:
        log.info("history_receipts_applied", count=len(applied))


async def _quietly(what: str, work: object) -> None:
    try:
        await work  # type: ignore[misc]
    except Exception as exc:
        if is_transient(exc):
            log.warning(f"{what}_failed", error=repr(exc))
        else:
            log.exception(f"{what}_error")
