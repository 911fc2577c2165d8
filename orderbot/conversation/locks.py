"""Per-customer mutual exclusion, within a process and across processes.

Two messages of one customer must never run their dialog steps at once, or one
step's state write would silently undo the other's. `ArrivalOrder` keeps a worker's
own messages of one customer in the order they were delivered (asyncio locks are
FIFO), and is held across a step's retries, so a step waiting out a dependency is not
overtaken by the customer's next message. The Redis lock (`ClientLocks`) excludes
other worker processes: with partitioned queues they meet only at a hand-over, when
a message can run in two processes at once. It is renewed while held, and its token
fences the state commit: a holder that lost the lock to another step cannot write (one
whose lease merely ran out, with nobody else in between, may: dialog_store.py).

Round trips are the worker's main cost, so the lock is taken by whatever script the
caller passes (`hold_loading`): the step's `begin` script takes it with `SET NX PX`
and, in the same round trip and only if it got it, reads what the step needs. The
lock is still taken first and atomically, and everything is read under it. A fenced
commit may delete the lock itself (`Lease.released`), saving the release's round trip.
Renewal is armed with a timer and only starts a task once a step has held the lock
for a third of its lease: almost no step lasts that long.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from orderbot.conversation.batch import batch_for
from orderbot.conversation.keys import Keys
from orderbot.errors import Stopping
from orderbot.runtime.waiting import sleep_unless_set

T = TypeVar("T")

# (lock key, token, lease in ms) -> what the caller loaded, or None: the lock is busy.
TakeLock = Callable[[str, str, int], Awaitable[T | None]]

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# Deletes a key only while it holds the caller's token: a lease that expired and was
# taken by someone else is theirs. Also the release of the outbox's per-reply claim.
RELEASE_IF_HELD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

RETRY_SLEEP = 0.005  # while another process holds the customer's lock (redis-py's default)


class _Tokens:
    """Fencing tokens: unique, not secret. A random prefix of the process (64 bits) and a
    counter, instead of a uuid4 per step (a urandom call each)."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._count = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}-{next(self._count):x}"


@dataclass
class _LocalLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
    left: bool = False  # a message of the customer was left for redelivery


@dataclass(slots=True)
class Lease(Generic[T]):
    """A held lock: its key and fencing token, what was loaded with it, and whether a
    fenced commit already deleted it (then it is not released again)."""

    key: str
    token: str
    loaded: T
    released: bool = False


class ArrivalOrder:
    """One customer's messages, one at a time, in the order they got here.

    A message left for redelivery (its turn ended in Stopping: the process stops, or the
    partition is handed over) is delivered again after the ones behind it here, so those
    are left too: a later message applied here first would be applied out of order."""

    def __init__(self) -> None:
        self._local: dict[str, _LocalLock] = {}

    @contextlib.asynccontextmanager
    async def turn(self, conversation_key: str) -> AsyncIterator[None]:
        local = self._local.get(conversation_key)
        if local is None:
            local = self._local[conversation_key] = _LocalLock()
        local.users += 1
        try:
            async with local.lock:
                if local.left:
                    raise Stopping("an earlier message of the customer was left for redelivery")
                try:
                    yield
                except Stopping:
                    local.left = True
                    raise
        finally:
            local.users -= 1
            if local.users == 0:
                del self._local[conversation_key]


class ClientLocks:
    def __init__(self, redis: Redis, prefix: str, timeout: float) -> None:
        self._keys = Keys(prefix)
        self._timeout = timeout
        self._lease_ms = max(1, int(timeout * 1000))
        self._tokens = _Tokens()
        batch = self._batch = batch_for(redis)
        self._renew = batch.script(_RENEW)
        self._release = batch.script(RELEASE_IF_HELD)

    def key(self, conversation_key: str) -> str:
        return self._keys.lock(conversation_key)

    @contextlib.asynccontextmanager
    async def hold(self, conversation_key: str) -> AsyncIterator[str]:
        """Hold the customer's lock; yields the token that fences the state commit."""
        async with self.hold_loading(conversation_key, self._take_plain) as lease:
            yield lease.token

    async def _take_plain(self, key: str, token: str, lease_ms: int) -> bool | None:
        taken = await self._batch.call(("SET", key, token, "NX", "PX", lease_ms))
        return True if taken else None

    @contextlib.asynccontextmanager
    async def hold_loading(
        self, conversation_key: str, take: TakeLock[T]
    ) -> AsyncIterator[Lease[T]]:
        """Hold the customer's lock, taken by `take` (which loads what it likes with it)."""
        key = self.key(conversation_key)
        token = self._tokens.next()
        while True:  # another process holds it: poll, as redis-py's Lock did
            loaded = await take(key, token, self._lease_ms)
            if loaded is not None:
                break
            await asyncio.sleep(RETRY_SLEEP)
        lease = Lease(key, token, loaded)
        renewal = _Renewal(self, lease)
        try:
            yield lease
        finally:
            await renewal.stop()
            if not lease.released:
                with contextlib.suppress(RedisError, OSError):
                    await self._release(keys=[key], args=[token])

    async def _extend(self, lease: Lease[T]) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._renew(keys=[lease.key], args=[lease.token, self._lease_ms])


class _Renewal(Generic[T]):
    """Extends a lease every third of its length while it is held; starts a task only
    when the first renewal falls due."""

    def __init__(self, locks: ClientLocks, lease: Lease[T]) -> None:
        self._locks = locks
        self._lease = lease
        self._every = locks._timeout / 3
        self._done: asyncio.Event | None = None  # made with the task: almost never
        self._task: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(self._every, self._start)

    def _start(self) -> None:
        self._done = asyncio.Event()
        self._task = asyncio.create_task(self._run(self._done), name="client-lock-renew")

    async def _run(self, done: asyncio.Event) -> None:
        while not done.is_set():
            await self._locks._extend(self._lease)
            await sleep_unless_set(self._every, done)

    async def stop(self) -> None:
        self._timer.cancel()
        if self._task is None or self._done is None:
            return
        # Stopped by an event, not by cancel(): redis-py can swallow a cancel that
        # lands inside a command, and awaiting the renewer then never returned,
        # holding the customer's lock for good. The wait is bounded all the same.
        self._done.set()
        _, pending = await asyncio.wait({self._task}, timeout=self._every)
        for task in pending:
            task.cancel()
