"""Redis commands of concurrent callers, sent together: one pipelined round trip per
turn of the event loop instead of one per command.

Every command pays a loopback `send()` and its reply handling, which under load is
much of what the server and the worker spend in the Redis client (bench/README.md has
the profiles). The calls of all tasks that reach Redis in the same
loop turn go out as one pipeline (not a transaction): each script still runs on its
own, atomically, in the order the calls were made, and each caller gets its own
reply or error, so nothing about what a call means changes. One pipeline is in flight
at a time; the calls made meanwhile form the next one, so batches grow with load
(group commit) and a lone call waits for nothing but its own round trip.

Scripts go by EVALSHA; a NOSCRIPT (Redis restarted or flushed, or a replica promoted
by Sentinel, which has not loaded them) loads the script and runs those calls again.
Whatever makes the whole pipeline fail (Redis unreachable) is raised to every caller
of that batch, as the single command would have raised it. A READONLY answer means
the server was demoted to a replica by a failover: the connection is dropped, so the
next batch connects to whatever is master now, and its callers get a ConnectionError,
the outage they already wait out and retry, never a write that silently did nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from collections.abc import Sequence
from typing import Any

import hiredis
import structlog
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = structlog.get_logger(__name__)

Arg = str | bytes | int | float


class Script:
    """A Lua script run through the batch: `await script(keys=[...], args=[...])`."""

    def __init__(self, batch: RedisBatch, source: str) -> None:
        self.batch = batch
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 (Redis's script id)

    def __call__(
        self, *, keys: Sequence[str], args: Sequence[Arg] = (), within: float = 0.0
    ) -> asyncio.Future[Any]:
        return self.batch.call((len(keys), *keys, *args), script=self, within=within)


class _Call:
    __slots__ = ("future", "packed", "script")

    def __init__(self, packed: bytes, future: asyncio.Future[Any], script: Script | None) -> None:
        self.packed = packed
        self.future = future
        self.script = script


class RedisBatch:
    def __init__(self, redis: Redis) -> None:
        # Weak: the process-wide map below is keyed weakly by the client, and a strong
        # reference from its value would keep every client (and its pool) alive for ever.
        self._redis: Redis = weakref.proxy(redis)
        self._pending: list[_Call] = []
        self._flusher: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: AbstractConnection | None = None
        self._timer: asyncio.TimerHandle | None = None

    def script(self, source: str) -> Script:
        return Script(self, source)

    def call(
        self, command: tuple[Arg, ...], *, script: Script | None = None, within: float = 0.0
    ) -> asyncio.Future[Any]:
        """Queue one command (a script's: its key count, keys and arguments); the future
        is its reply (or its error). `within` > 0: it need not go before that many
        seconds, so it rides with the next call that must go now, if any comes."""
        # Packed here, so that an argument Redis cannot take (not str, bytes or a number,
        # a bool, a str that is not Unicode) is raised to this caller alone: in the
        # pipeline it would fail the whole batch.
        packed = _pack(command if script is None else ("EVALSHA", script.sha, *command))
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a client reused on a new loop: forget the old one's
            self._loop, self._pending, self._flusher, self._conn = loop, [], None, None
            self._timer = None
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append(_Call(packed, future, script))
        if within <= 0:
            self._start()
        elif self._timer is None and (self._flusher is None or self._flusher.done()):
            self._timer = loop.call_later(within, self._start)
        return future

    def fire(self, command: tuple[Arg, ...], *, what: str, within: float = 0.0) -> None:
        """Queue a best-effort command nobody waits for; a failure is logged as `what`."""
        try:
            queued = self.call(command, within=within)
        except (TypeError, ValueError) as exc:  # an argument Redis cannot take: logged too
            log.warning(what, error=str(exc))
            return
        queued.add_done_callback(lambda f: _log_failure(f, what))

    def _start(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if (self._flusher is None or self._flusher.done()) and self._pending:
            self._flusher = asyncio.create_task(self._flush(), name="redis-batch")
            self._flusher.add_done_callback(self._flusher_done)

    def _flusher_done(self, flusher: asyncio.Task[None]) -> None:
        if self._flusher is flusher:  # cancelled before it ran: its `finally` did not
            self._flusher = None
        if flusher.cancelled():
            # Cancelled (perhaps before it ever ran): nobody will send what was queued,
            # and its callers must not wait for ever.
            for call in self._pending:
                call.future.cancel()
            self._pending = []

    async def _flush(self) -> None:
        # Runs after the tasks that were ready in this loop turn: their calls are the batch.
        try:
            while self._pending:
                calls, self._pending = self._pending, []
                await self._run(calls)
        finally:
            self._flusher = None

    async def _run(self, calls: list[_Call]) -> None:
        replies = await self._answer(calls)
        if replies is None:
            return
        unknown = [call for call, reply in zip(calls, replies, strict=True) if _unknown(reply)]
        _settle([c for c in calls if c not in unknown], [r for r in replies if not _unknown(r)])
        if unknown:
            # Redis restarted or was flushed: load the scripts and run just those again.
            # The others are answered already: a failure here is not theirs.
            try:
                for script in {id(s): s for c in unknown if (s := c.script)}.values():
                    loaded = await self._redis.script_load(script.source)
                    if loaded != script.sha:  # the calls' bytes carry the sha of its UTF-8
                        raise RuntimeError(f"Redis knows the script as {loaded}, not {script.sha}")
            except Exception as exc:
                _fail(unknown, exc)
                return
            again = await self._answer(unknown)
            if again is not None:
                _settle(unknown, again)

    async def _answer(self, calls: list[_Call]) -> list[Any] | None:
        """The replies of `calls`, or None when the pipeline failed (each caller then
        has the error, as its single command would have raised it)."""
        try:
            return await self._execute(calls)
        except asyncio.CancelledError:
            for call in calls:
                call.future.cancel()
            raise
        except Exception as exc:
            _fail(calls, exc)
            return None

    async def _execute(self, calls: list[_Call]) -> list[Any]:
        """Send the calls as one pipeline on the batch's own connection; read every reply.

        Its own connection, taken from the client's pool once and kept (the pool closes
        it with the client): the pool's hand-out checks each connection for stray data
        with a zero-timeout read, which cost more than the rest of a small batch. Here
        every reply is always read, or the connection is dropped on any failure.
        """
        conn = self._conn
        if conn is None:
            try:
                conn = self._conn = await self._redis.connection_pool.get_connection()
            except RuntimeError as exc:
                raise _lost(exc) from exc
        try:
            replies = await _round_trip(conn, [call.packed for call in calls])
        except BaseException as exc:
            self._conn = None
            await conn.disconnect(nowait=True)
            await self._redis.connection_pool.release(conn)
            if isinstance(exc, RuntimeError):
                raise _lost(exc) from exc
            raise
        if any(isinstance(reply, ReadOnlyError) for reply in replies):
            self._conn = None
            await conn.disconnect(nowait=True)
            await self._redis.connection_pool.release(conn)
            demoted = RedisConnectionError("Redis answered READONLY: the master was demoted")
            replies = [demoted if isinstance(r, ReadOnlyError) else r for r in replies]
        return replies


def _pack(command: tuple[Arg, ...]) -> bytes:
    """By hiredis (C), not by the asyncio connection's `pack_commands`, which encodes each
    argument in Python: the same bytes, with the client's default UTF-8 encoding. A bool
    is refused, as redis-py refuses it, and so is any other subclass of int (an IntEnum,
    which redis-py would send as its repr)."""
    packed: bytes = hiredis.pack_command(command)  # type: ignore[arg-type]  # its stub: a 1-tuple
    return packed


async def _round_trip(conn: AbstractConnection, packed: list[bytes]) -> list[Any]:
    """Write the batch and read its replies under one socket timeout for it all, on the
    connection's own stream and parser: `send_packed_command` runs its write in a task of
    its own to time it, and `read_response` opens a timeout for each reply, which cost
    about as much as parsing a small one. An error reply stays a value (its caller's),
    as `read_response` would have raised it; a timeout or a broken socket raises the
    errors redis-py raises."""
    connection: Any = conn  # redis-py's connection methods are untyped
    if not connection.is_connected:
        await connection.connect()
    else:
        await connection.check_health()  # a PING, when one is due
    writer = connection._writer
    parser = connection._parser
    try:
        async with asyncio.timeout(conn.socket_timeout):
            writer.writelines(packed)
            await writer.drain()
            replies = [await parser.read_response() for _ in packed]
    except TimeoutError as exc:
        raise RedisTimeoutError("Timeout talking to Redis") from exc
    except OSError as exc:
        raise RedisConnectionError(f"Error while talking to Redis: {exc!r}") from exc
    if conn.health_check_interval:  # it answered: no PING due for a while
        conn.next_health_check = asyncio.get_running_loop().time() + conn.health_check_interval
    return replies


def _unknown(reply: Any) -> bool:
    return isinstance(reply, NoScriptError)


def _settle(calls: list[_Call], replies: list[Any]) -> None:
    for call, reply in zip(calls, replies, strict=True):
        if call.future.done():  # its caller was cancelled meanwhile
            continue
        if isinstance(reply, Exception):
            call.future.set_exception(reply)
        else:
            call.future.set_result(reply)


def _fail(calls: list[_Call], exc: Exception) -> None:
    for call in calls:
        if not call.future.done():
            call.future.set_exception(exc)


def _lost(exc: RuntimeError) -> RedisConnectionError:
    """uvloop reports a write to a transport Redis closed (CLIENT KILL, a restart, a cut
    mid-handshake) as RuntimeError, which redis-py passes on as it is; callers treat a
    lost connection as a dependency outage (fail open, wait and retry), never a 500."""
    return RedisConnectionError(f"connection lost: {exc}")


def _log_failure(future: asyncio.Future[Any], what: str) -> None:
    if not future.cancelled() and (exc := future.exception()) is not None:
        log.warning(what, error=str(exc))


_batches: weakref.WeakKeyDictionary[Redis, RedisBatch] = weakref.WeakKeyDictionary()


def batch_for(redis: Redis) -> RedisBatch:
    """The one batch of a client, shared by every store of the process that uses it."""
    batch = _batches.get(redis)
    if batch is None:
        batch = _batches[redis] = RedisBatch(redis)
    return batch
