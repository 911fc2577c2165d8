"""Helpers for tests of the live event bus: a bus on a Redis client of its own name,
and a wait for its subscriber to be blocked in a read (no event can slip by then)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from orderbot.conversation.batch import batch_for
from orderbot.conversation.keys import Keys
from orderbot.events.bus import RedisEventBus
from orderbot.events.models import LiveEvent


@contextlib.asynccontextmanager
async def named_bus(
    redis_url: str, prefix: str, *, publish_timeout: float = 1.0, max_length: int = 1000
) -> AsyncIterator[tuple[RedisEventBus, str]]:
    """A bus and the client name its connections carry (for `wait_reading`)."""
    name = f"bus-{uuid.uuid4().hex[:12]}"
    client = Redis.from_url(redis_url, decode_responses=True, client_name=name, socket_timeout=5)
    try:
        bus = RedisEventBus(
            client,
            Keys(prefix).events,
            commands=batch_for(client),
            max_length=max_length,
            publish_timeout=publish_timeout,
            block=0.5,
            retry_delay=0.05,
        )
        yield bus, name
    finally:
        await client.aclose()


async def wait_reading(admin: Redis, client_name: str, timeout: float = 10.0) -> None:
    """Until a connection named `client_name` is blocked in XREAD."""
    async with asyncio.timeout(timeout):
        while True:
            clients = await admin.client_list()
            if any(c.get("name") == client_name and c.get("cmd") == "xread" for c in clients):
                return
            await asyncio.sleep(0.01)


async def take(events: AsyncIterator[LiveEvent], n: int, timeout: float = 10.0) -> list[LiveEvent]:
    """The next `n` events of a subscription."""
    got: list[LiveEvent] = []
    async with asyncio.timeout(timeout):
        async for event in events:
            got.append(event)
            if len(got) == n:
                break
    return got
