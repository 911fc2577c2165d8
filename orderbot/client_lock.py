"""Per-customer mutual exclusion, within a process and across processes.

Two messages of one customer must never run their dialog steps at once, or one
step's state write would silently undo the other's. The in-process asyncio lock
keeps a worker's own messages of one customer in arrival order (asyncio locks are
FIFO); the Redis lock excludes other worker processes. The Redis lock is renewed
while held, and its token fences the state commit: a holder that lost the lock
cannot write.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import RedisError


@dataclass
class _LocalLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class ClientLocks:
    def __init__(self, redis: Redis, prefix: str, timeout: float) -> None:
        self._redis = redis
        self._prefix = prefix
        self._timeout = timeout
        self._local: dict[str, _LocalLock] = {}

    def key(self, conversation_key: str) -> str:
        return f"{self._prefix}lock:{conversation_key}"

    @contextlib.asynccontextmanager
    async def hold(self, conversation_key: str) -> AsyncIterator[str]:
        """Hold the customer's lock; yields the token that fences the state commit."""
        local = self._local.setdefault(conversation_key, _LocalLock())
        local.users += 1
        try:
            async with local.lock, self._redis_lock(conversation_key) as token:
                yield token
        finally:
            local.users -= 1
            if local.users == 0:
                del self._local[conversation_key]

    @contextlib.asynccontextmanager
    async def _redis_lock(self, conversation_key: str) -> AsyncIterator[str]:
        token = uuid.uuid4().hex
        lock = self._redis.lock(
            self.key(conversation_key),
            timeout=self._timeout,
            sleep=0.005,
            thread_local=False,
        )
        await lock.acquire(token=token)
        done = asyncio.Event()
        renewer = asyncio.create_task(self._renew(lock, done), name="client-lock-renew")
        try:
            yield token
        finally:
            # Stopped by an event, not by cancel(): redis-py can swallow a cancel that
            # lands inside reacquire(), and awaiting the renewer then never returned,
            # holding the customer's lock for good. The wait is bounded all the same.
            done.set()
            _, pending = await asyncio.wait({renewer}, timeout=self._timeout / 3)
            for task in pending:
                task.cancel()
            with contextlib.suppress(RedisError, OSError):
                await lock.release()

    async def _renew(self, lock: Lock, done: asyncio.Event) -> None:
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._timeout / 3):
                    await done.wait()
                return
            with contextlib.suppress(RedisError, OSError):
                await lock.reacquire()
