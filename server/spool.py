"""The edge spool: where a webhook's message waits, durable, while the broker cannot
confirm it, so that the provider still gets its 2xx.

Providers drop what we refuse (Twilio never retries a 5xx; Chat2Desk retries three
times over two hours, then disables the webhook), so a broker that is down, not yet
connected, slow to confirm or full must not turn into refusals. Each server process
owns one SQLite file in SPOOL_DIR (WAL, synchronous=FULL: a message is on disk before
its 2xx), locked with flock while the process lives. A drain task publishes what is
spooled, oldest first, with confirms, and deletes each message only after its
confirm; while anything is spooled, new messages are spooled behind it, so one
customer's messages keep their order. A file whose lock is free belongs to a process
that died (SIGKILL, a crash): any server on the same SPOOL_DIR adopts it and drains it
before its own. Past SPOOL_MAX_BYTES a message is refused (503): the one case left.

Writes of concurrent requests share one transaction and one fsync (group commit): a
request waits for nothing but the commit that carries its row.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiosqlite
import structlog

from orderbot.amqp.publisher import Publisher
from orderbot.errors import BrokerUnavailable, SpoolFull
from orderbot.runtime import metrics
from orderbot.runtime.waiting import sleep_unless_set

log = structlog.get_logger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    queue      TEXT    NOT NULL,
    message_id TEXT    NOT NULL,
    body       BLOB    NOT NULL,
    spooled_at REAL    NOT NULL
)
"""
SUFFIX = ".spool.sqlite3"


@dataclass(frozen=True, slots=True)
class Spooled:
    seq: int
    queue: str
    message_id: str
    body: bytes
    spooled_at: float


class _File:
    """One spool file, its connection and its lock."""

    def __init__(self, path: Path, lock_fd: int, db: aiosqlite.Connection) -> None:
        self.path = path
        self._lock_fd = lock_fd
        self.db = db
        self.depth = 0
        self.size = 0
        self.oldest: float | None = None

    @classmethod
    async def open(cls, path: Path, *, wait: bool) -> _File | None:
        """The file, locked; None when another live process holds it (and not `wait`)."""
        lock_path = path.with_name(path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            db = await aiosqlite.connect(path)
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute(_SCHEMA)
            await db.commit()
            async with db.execute(
                "SELECT count(*), coalesce(sum(length(body)), 0), min(spooled_at) FROM spool"
            ) as cursor:
                row = await cursor.fetchone()
        except BaseException:
            os.close(fd)
            raise
        opened = cls(path, fd, db)
        if row is not None:
            opened.depth, opened.size, opened.oldest = int(row[0]), int(row[1]), row[2]
        return opened

    async def oldest_rows(self, limit: int) -> list[Spooled]:
        async with self.db.execute(
            "SELECT seq, queue, message_id, body, spooled_at FROM spool ORDER BY seq LIMIT ?",
            (limit,),
        ) as cursor:
            rows = await cursor.fetchall()
        return [Spooled(int(r[0]), str(r[1]), str(r[2]), bytes(r[3]), float(r[4])) for r in rows]

    async def remove(self, rows: list[Spooled]) -> None:
        await self.db.executemany("DELETE FROM spool WHERE seq = ?", [(r.seq,) for r in rows])
        await self.db.commit()
        self.depth -= len(rows)
        self.size -= sum(len(r.body) for r in rows)
        if self.depth <= 0:
            self.depth, self.size, self.oldest = 0, 0, None
        else:
            async with self.db.execute("SELECT min(spooled_at) FROM spool") as cursor:
                row = await cursor.fetchone()
            self.oldest = row[0] if row else None

    async def close(self, *, delete: bool = False) -> None:
        await self.db.close()
        if delete:
            for suffix in ("", "-wal", "-shm", ".lock"):
                with contextlib.suppress(FileNotFoundError):
                    self.path.with_name(self.path.name + suffix).unlink()
        os.close(self._lock_fd)


class EdgeSpool:
    """This process's spool file, and the files of dead processes it adopted."""

    def __init__(self, directory: Path, name: str, *, max_bytes: int) -> None:
        self._directory = directory
        self._name = name
        self._max_bytes = max_bytes
        self._own: _File | None = None
        self._adopted: list[_File] = []
        self._pending: list[tuple[tuple[str, str, bytes, float], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._committing = 0  # rows of the transaction under way
        self.wake = asyncio.Event()  # set on every put: the drain has work

    @property
    def depth(self) -> int:
        """Messages spooled and not yet confirmed by the broker (in memory, no I/O)."""
        own = self._own.depth if self._own else 0
        adopted = sum(f.depth for f in self._adopted)
        return own + adopted + len(self._pending) + self._committing

    @property
    def empty(self) -> bool:
        return self.depth == 0

    @property
    def drainable(self) -> bool:
        """Whether a committed message waits: what the drain can read. Rows still being
        committed count in `empty` (new messages queue behind them) but not here."""
        own = self._own.depth if self._own else 0
        return own > 0 or any(f.depth for f in self._adopted)

    @property
    def size(self) -> int:
        """Bytes of the bodies spooled (what SPOOL_MAX_BYTES bounds)."""
        own = self._own.size if self._own else 0
        return own + sum(f.size for f in self._adopted)

    def oldest_age(self) -> float:
        """Seconds the oldest spooled message has waited; 0 when none does."""
        stamps = [f.oldest for f in (self._own, *self._adopted) if f and f.oldest is not None]
        return max(0.0, time.time() - min(stamps)) if stamps else 0.0

    async def open(self) -> None:
        self._directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = self._name
        own = await _File.open(self._directory / f"{name}{SUFFIX}", wait=False)
        if own is None:  # another live process of the same name: a file of our own
            name = f"{name}-{os.getpid()}"
            own = await _File.open(self._directory / f"{name}{SUFFIX}", wait=True)
        assert own is not None
        self._own = own
        if own.depth:
            log.warning("spool_found_messages", path=str(own.path), messages=own.depth)
        await self.adopt_orphans()

    async def adopt_orphans(self) -> int:
        """Take over the files of processes that died with messages in them."""
        taken = {f.path for f in (self._own, *self._adopted) if f}
        adopted = 0
        for path in sorted(self._directory.glob(f"*{SUFFIX}")):
            if path in taken:
                continue
            orphan = await _File.open(path, wait=False)
            if orphan is None:  # its process is alive and drains it itself
                continue
            if orphan.depth == 0:
                await orphan.close(delete=True)
                continue
            log.warning("spool_adopted", path=str(path), messages=orphan.depth)
            self._adopted.append(orphan)
            adopted += orphan.depth
        if adopted:
            self.wake.set()
        return adopted

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        for adopted in self._adopted:
            await adopted.close()
        self._adopted = []
        if self._own is not None:
            await self._own.close()
            self._own = None

    async def put(self, queue: str, message_id: str, body: bytes) -> None:
        """Return once the message is on disk; SpoolFull past SPOOL_MAX_BYTES."""
        if self.size + len(body) > self._max_bytes:
            raise SpoolFull(f"the edge spool holds {self.size} bytes (SPOOL_MAX_BYTES)")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(((queue, message_id, body, time.time()), future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="spool-writer")
        await future

    async def _write(self) -> None:
        """Commit what is pending in one transaction; what comes meanwhile, in the next."""
        own = self._own
        while self._pending:
            batch, self._pending = self._pending, []
            rows = [row for row, _ in batch]
            self._committing = len(rows)
            try:
                if own is None:
                    raise SpoolFull("the edge spool is closed")
                await own.db.executemany(
                    "INSERT INTO spool (queue, message_id, body, spooled_at) VALUES (?, ?, ?, ?)",
                    rows,
                )
                await own.db.commit()
            except Exception as exc:
                self._committing = 0
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self._committing = 0
            own.depth += len(rows)
            own.size += sum(len(row[2]) for row in rows)
            if own.oldest is None:
                own.oldest = rows[0][3]
            for _, future in batch:
                if not future.done():
                    future.set_result(None)
            self.wake.set()

    async def remove(self, spool_file: _File, rows: list[Spooled]) -> None:
        """Delete messages the broker confirmed; an adopted file drained to the end is
        deleted with them."""
        await spool_file.remove(rows)
        if spool_file.depth == 0 and spool_file in self._adopted:
            await self._retire(spool_file)

    async def _retire(self, adopted: _File) -> None:
        """A dead process's file, drained: deleted with its lock."""
        self._adopted.remove(adopted)
        await adopted.close(delete=True)
        log.info("spool_adopted_drained", path=str(adopted.path))

    async def next_batch(self, limit: int = 100) -> tuple[_File, list[Spooled]] | None:
        """The oldest spooled messages, adopted files first; None when all is drained."""
        for adopted in list(self._adopted):
            rows = await adopted.oldest_rows(limit)
            if rows:
                return adopted, rows
            await self._retire(adopted)  # its count said more than it held
        if self._own is not None and self._own.depth:
            rows = await self._own.oldest_rows(limit)
            if rows:
                return self._own, rows
        return None


class Drain:
    """Publishes what is spooled, oldest first, one confirm at a time: a message is
    deleted only after its confirm, and none overtakes an older one. A crash between a
    confirm and the delete publishes that message again; the worker's processed-marker
    makes the repeat a no-op."""

    RETRY = 0.5  # seconds between tries while the broker refuses
    ADOPT_EVERY = 10.0  # seconds between looks for files of dead processes

    def __init__(self, spool: EdgeSpool, broker: Publisher, *, ready: Callable[[], bool]) -> None:
        self._spool = spool
        self._broker = broker
        self._ready = ready
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()
        self._spool.wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_adoption = loop.time() + self.ADOPT_EVERY
        while not self._stopping.is_set():
            if loop.time() >= next_adoption:
                await self._spool.adopt_orphans()
                next_adoption = loop.time() + self.ADOPT_EVERY
            # Only what is committed: with rows still being committed and nothing on
            # disk yet, a drain that went on would find no batch, await nothing that
            # yields, and spin with the event loop stopped (the commit's own completion
            # included). The commit sets `wake`.
            if not self._spool.drainable or not self._ready():
                self._spool.wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.RETRY if not self._spool.empty else 1.0):
                        await self._spool.wake.wait()
                continue
            try:
                drained = await self._drain_batch()
            except Exception as exc:  # the spool file itself failed: log, wait, try again
                log.error("spool_drain_failed", error=repr(exc))
                drained = False
            if not drained:
                await sleep_unless_set(self.RETRY, self._stopping)

    async def _drain_batch(self) -> bool:
        """Publish one batch; False when the broker refused before the end of it."""
        found = await self._spool.next_batch()
        if found is None:
            return True
        spool_file, rows = found
        confirmed: list[Spooled] = []
        refused: BrokerUnavailable | None = None
        for row in rows:
            if self._stopping.is_set():  # the rest waits in the spool for the next start
                break
            try:
                await self._broker.publish(
                    row.queue, row.body, message_id=row.message_id, correlation_id=row.message_id
                )
            except BrokerUnavailable as exc:
                refused = exc
                break
            confirmed.append(row)
        if confirmed:
            await self._spool.remove(spool_file, confirmed)
            metrics.SPOOL_DRAINED.inc(len(confirmed))
            log.info("spool_drained", messages=len(confirmed), left=self._spool.depth)
        if refused is not None:
            log.warning("spool_drain_refused", error=str(refused), left=self._spool.depth)
            return False
        return True


@contextlib.asynccontextmanager
async def open_spool(directory: Path, name: str, *, max_bytes: int) -> AsyncIterator[EdgeSpool]:
    spool = EdgeSpool(directory, name, max_bytes=max_bytes)
    await spool.open()
    try:
        yield spool
    finally:
        await spool.close()
