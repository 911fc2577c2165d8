"""The history writer of a process: steps hand it entries, a task of its own writes them.

Recording never waits and never raises: an entry joins a bounded in-memory queue, and the
writer's task takes whatever has gathered and writes it as one batch (orderbot/history/
store.py), so concurrent steps share one round trip. A step that wants its entries written
before it commits (so that a worker killed after the commit has lost nothing) calls
`settle`, which waits for them, but never longer than HISTORY_SETTLE_TIMEOUT and not at all
while the writer is failing: a database that is down costs history, never a step.

A batch that fails for a transient reason is kept and written again with backoff; one the
database refuses (a bug, a bad row) is split, and only the rows it still refuses alone are
dropped. A full queue drops the new entry. Every drop is counted
(orderbot_history_entries_total{outcome="dropped"}) and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import asyncpg
import structlog

from orderbot.config.settings import Settings
from orderbot.errors import is_transient
from orderbot.history import store
from orderbot.history.models import HistoryEntry, Written
from orderbot.runtime import metrics
from orderbot.runtime.resources import open_postgres
from orderbot.runtime.tasks import finish
from orderbot.runtime.waiting import sleep_unless_set

log = structlog.get_logger(__name__)

LAST_TRIES = 3

OnWritten = Callable[[Sequence[Written]], Awaitable[None]]
MAX_TELLING = 64  # batches whose live events may be on their way at once

_WRITTEN, _DROPPED, _RETRIED = (
    metrics.HISTORY_ENTRIES.labels(outcome) for outcome in ("written", "dropped", "retried")
)


class HistoryWriter:
    """`record` from anywhere in the process; `run` writes until stopped."""

    def __init__(
        self,
        *,
        enabled: bool = True,
        capacity: int = 10_000,
        batch: int = 500,
        settle_timeout: float = 1.0,
        on_written: OnWritten | None = None,
    ) -> None:
        self.enabled = enabled
        self._capacity = capacity
        self._batch = batch
        self._settle_timeout = settle_timeout
        self._on_written = on_written
        self._queue: deque[tuple[int, HistoryEntry]] = deque()
        self._recorded = 0  # sequence number of the last entry taken
        self._written = 0  # every entry up to this one is written (or dropped)
        self._healthy = True
        self._arrived = asyncio.Event()
        self._stopped = False
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()  # settling steps
        self._telling: set[asyncio.Task[None]] = set()
        metrics.HISTORY_QUEUE.set_function(lambda: len(self._queue))

    @property
    def healthy(self) -> bool:
        return self._healthy

    def record(self, entry: HistoryEntry) -> None:
        if not self.enabled:
            return
        if len(self._queue) >= self._capacity:
            _DROPPED.inc()
            log.warning("history_entry_dropped", reason="queue full", key=entry.key)
            return
        self._recorded += 1
        self._queue.append((self._recorded, entry))
        self._arrived.set()

    async def settle(self) -> None:
        """Wait until what was recorded so far is written, within the settle timeout;
        at once while the writer is failing or history is off."""
        target = self._recorded
        if not self.enabled or not self._healthy or self._stopped or self._written >= target:
            return
        # One future per settling step, woken by the batch that covers its target (the
        # targets only grow, so the waiters are in order) or by its timer: every step
        # pays this, and a condition's lock and predicate cost several times more.
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(self._settle_timeout, _wake, waiter)
        waiters = self._waiters
        while waiters and waiters[0][1].done():  # timed out (all wait as long) or cancelled
            waiters.popleft()
        waiters.append((target, waiter))
        try:
            await waiter
        finally:
            timer.cancel()

    async def run(self, pool: asyncpg.Pool, stop: asyncio.Event) -> None:
        """Write batches until `stop`, then what is left (a few tries each)."""
        wake = asyncio.create_task(_wake_on(stop, self._arrived))
        try:
            await self._run(pool, stop)
        finally:
            self._stopped = True  # nothing is written any more: no step waits for it
            while self._waiters:
                _wake(self._waiters.popleft()[1])
            wake.cancel()
            await asyncio.gather(wake, return_exceptions=True)

    async def _run(self, pool: asyncpg.Pool, stop: asyncio.Event) -> None:
        delay = 0.2
        last_tries = 0  # transient failures of one batch once stopping
        upto = 0  # the last entry of a batch whose retried part is `pending`
        pending: list[tuple[int, HistoryEntry]] = []
        while True:
            if not pending:
                if not self._queue:
                    if stop.is_set():
                        return
                    self._arrived.clear()
                    await self._arrived.wait()
                    continue
                count = min(self._batch, len(self._queue))
                pending = [self._queue.popleft() for _ in range(count)]
            try:
                await self._write(pool, [entry for _, entry in pending])
            except Exception as exc:
                # Stopping leaves no time to wait the database out, but a transient
                # failure gets a few immediate tries: the pool drops a connection whose
                # backend died, so the next try is on a new one.
                if stop.is_set() and (not is_transient(exc) or last_tries >= LAST_TRIES):
                    _DROPPED.inc(len(pending))
                    log.warning("history_batch_dropped", entries=len(pending), error=repr(exc))
                elif is_transient(exc):
                    _RETRIED.inc(len(pending))
                    await self._set_health(False)
                    log.warning("history_write_failed", entries=len(pending), error=repr(exc))
                    if stop.is_set():
                        last_tries += 1
                    await sleep_unless_set(delay, stop)
                    delay = min(delay * 2, 5.0)
                    continue  # the same batch again
                else:
                    again = await self._write_apart(pool, pending)
                    if again and not stop.is_set():
                        # The rest of the batch is written: once these are, all of it is.
                        upto = max(upto, pending[-1][0])
                        pending = again
                        await sleep_unless_set(delay, stop)
                        continue
                    if again:
                        _DROPPED.inc(len(again))
                        log.warning("history_batch_dropped", entries=len(again), error=repr(exc))
            else:
                delay = 0.2
                last_tries = 0
                await self._set_health(True)
            await self._advance(max(upto, pending[-1][0]))
            pending = []
            upto = 0

    async def _write(self, pool: asyncpg.Pool, entries: Sequence[HistoryEntry]) -> None:
        async with pool.acquire() as conn:
            written = await store.write(conn, entries)
        _WRITTEN.inc(len(entries))
        if written and self._on_written is not None:
            # Told beside the writing, not in its way: the steps settling on the next batch
            # do not wait for the bus.
            if len(self._telling) >= MAX_TELLING:
                log.warning("history_events_dropped", rows=len(written))
                return
            task = asyncio.create_task(self._tell(written))
            self._telling.add(task)
            task.add_done_callback(self._telling.discard)

    async def _tell(self, written: Sequence[Written]) -> None:
        assert self._on_written is not None
        try:
            await self._on_written(written)
        except Exception:  # live events are a convenience: never the writer's end
            log.exception("history_events_failed")

    async def told(self) -> None:
        """Wait for the live events of what was written (tests, and a clean stop)."""
        while self._telling:
            await asyncio.gather(*self._telling, return_exceptions=True)

    async def _write_apart(
        self, pool: asyncpg.Pool, pending: list[tuple[int, HistoryEntry]]
    ) -> list[tuple[int, HistoryEntry]]:
        """A batch the database refused: each entry alone, dropping those still refused.
        Returns the entries that failed for a transient reason (a connection the database
        closed meanwhile): those are written again, not dropped."""
        again: list[tuple[int, HistoryEntry]] = []
        for item in pending:
            try:
                await self._write(pool, [item[1]])
            except Exception as exc:
                if is_transient(exc):
                    again.append(item)
                    continue
                _DROPPED.inc()
                log.error("history_entry_refused", key=item[1].key, error=repr(exc))
        return again

    async def _advance(self, upto: int) -> None:
        self._written = max(self._written, upto)
        waiters = self._waiters
        while waiters and waiters[0][0] <= self._written:
            _wake(waiters.popleft()[1])

    async def _set_health(self, healthy: bool) -> None:
        if healthy == self._healthy:
            return
        self._healthy = healthy
        if not healthy:  # a step does not wait on a writer that is failing
            while self._waiters:
                _wake(self._waiters.popleft()[1])


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():  # its step may have been cancelled, or its timer was first
        waiter.set_result(None)


async def _wake_on(stop: asyncio.Event, arrived: asyncio.Event) -> None:
    """Stopping wakes the writer like a new entry would."""
    await stop.wait()
    arrived.set()


def writer_for(settings: Settings, on_written: OnWritten | None = None) -> HistoryWriter:
    return HistoryWriter(
        enabled=settings.history_enabled,
        capacity=settings.history_queue_size,
        settle_timeout=settings.history_settle_timeout.total_seconds(),
        on_written=on_written,
    )


@contextlib.asynccontextmanager
async def running_writer(
    writer: HistoryWriter,
    settings: Settings,
    pool: asyncpg.Pool | None = None,
) -> AsyncIterator[HistoryWriter]:
    """Run `writer` beside the process: on `pool`, or on a small pool of its own opened in
    the background (the outbox worker delivers replies while PostgreSQL is down)."""
    if not writer.enabled:
        yield writer
        return
    done = asyncio.Event()

    async def _run() -> None:
        try:
            if pool is not None:
                await writer.run(pool, done)
                await writer.told()
                return
            async with open_postgres(settings, max_size=2, stop=done) as own:
                if own is not None:
                    await writer.run(own, done)
            await writer.told()
        except Exception:
            log.exception("history_writer_stopped")

    task = asyncio.create_task(_run(), name="history-writer")
    try:
        yield writer
    finally:
        done.set()
        await finish(task)
