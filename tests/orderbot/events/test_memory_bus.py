"""The in-memory bus behaves as the Redis one does for the code that uses it."""

from __future__ import annotations

import asyncio

from orderbot.events.memory import InMemoryEventBus
from orderbot.events.models import LiveEvent
from tests.support.live_events import take


async def test_the_fake_resumes_after_an_id_and_keeps_tenants_apart() -> None:
    bus = InMemoryEventBus()
    for n in range(1, 4):
        await bus.publish(LiveEvent.now("a", "order", n=n))
        await bus.publish(LiveEvent.now("b", "order", n=n))
    first = await take(bus.subscribe("a", "0-0"), 2)
    rest = await take(bus.subscribe("a", first[-1].id), 1)
    assert [e.data["n"] for e in first + rest] == [1, 2, 3]
    assert {e.tenant for e in first + rest} == {"a"}


async def test_the_fake_wakes_a_subscriber_waiting_from_now_on() -> None:
    bus = InMemoryEventBus()
    await bus.publish(LiveEvent.now("a", "order", n=0))
    waiting = asyncio.ensure_future(take(bus.subscribe("a"), 1))
    await asyncio.sleep(0)  # the subscriber's generator starts and waits
    await bus.publish(LiveEvent.now("a", "order", n=1))
    assert [e.data["n"] for e in await waiting] == [1]
