"""The Redis bus: per-tenant streams that a subscriber reads from now on or resumes
from an id, and a publish that never fails or stalls the step that makes it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis

from orderbot.conversation.batch import batch_for
from orderbot.conversation.keys import Keys
from orderbot.events.bus import RedisEventBus, is_event_id
from orderbot.events.models import LiveEvent
from orderbot.runtime import metrics
from tests.support.live_events import named_bus, take, wait_reading
from tests.support.services import Services
from tests.support.tcp_proxy import running_proxy


def _order(tenant: str, order_id: int) -> LiveEvent:
    return LiveEvent.now(tenant, "order", order_id=order_id, status="NEW")


async def _next(events: AsyncIterator[LiveEvent]) -> LiveEvent:
    return (await take(events, 1))[0]


async def test_a_subscriber_reads_what_is_published_after_it_started(
    services: Services, namespace: str, redis: Redis
) -> None:
    async with named_bus(services.redis_url, f"{namespace}:") as (bus, name):
        await bus.publish(_order("t1", 1))
        events = bus.subscribe("t1")
        first = asyncio.ensure_future(_next(events))
        await wait_reading(redis, name)
        await bus.publish(_order("t1", 2))
        event = await first
        await events.aclose()  # type: ignore[attr-defined]
    assert event.data == {"order_id": 2, "status": "NEW"}
    assert (event.kind, event.tenant) == ("order", "t1")
    assert event.id is not None
    assert is_event_id(event.id)


async def test_a_subscriber_resumes_after_the_last_id_it_saw(
    services: Services, namespace: str
) -> None:
    async with named_bus(services.redis_url, f"{namespace}:") as (bus, _):
        for order_id in range(1, 6):
            await bus.publish(_order("t1", order_id))
        seen = await take(bus.subscribe("t1", "0-0"), 2)
        rest = await take(bus.subscribe("t1", seen[-1].id), 3)
    assert [e.data["order_id"] for e in seen] == [1, 2]
    assert [e.data["order_id"] for e in rest] == [3, 4, 5]


async def test_a_tenant_never_reads_another_tenants_events(
    services: Services, namespace: str
) -> None:
    async with named_bus(services.redis_url, f"{namespace}:") as (bus, _):
        await bus.publish(_order("other", 1))
        await bus.publish(_order("mine", 2))
        await bus.publish(_order("other", 3))
        await bus.publish(_order("mine", 4))
        mine = await take(bus.subscribe("mine", "0-0"), 2)
    assert [(e.tenant, e.data["order_id"]) for e in mine] == [("mine", 2), ("mine", 4)]


async def test_the_stream_keeps_about_the_configured_length(
    services: Services, namespace: str, redis: Redis
) -> None:
    async with named_bus(services.redis_url, f"{namespace}:", max_length=100) as (bus, _):
        for order_id in range(1000):
            await bus.publish(_order("t1", order_id))
    # MAXLEN ~ trims whole stream nodes (100 entries each by default), never below it.
    assert 100 <= await redis.xlen(Keys(f"{namespace}:").events("t1")) <= 300


async def test_an_unreadable_entry_is_skipped_not_fatal(
    services: Services, namespace: str, redis: Redis
) -> None:
    key = Keys(f"{namespace}:").events("t1")
    async with named_bus(services.redis_url, f"{namespace}:") as (bus, _):
        await redis.xadd(key, {"event": "{not json"})
        await redis.xadd(key, {"something": "else"})
        await bus.publish(_order("t1", 7))
        (event,) = await take(bus.subscribe("t1", "0-0"), 1)
    assert event.data["order_id"] == 7


async def test_a_publish_to_a_redis_that_answers_nothing_returns_within_its_timeout(
    services: Services, namespace: str
) -> None:
    async with running_proxy(urlsplit(services.redis_url).port or 6379) as proxy:
        proxy.outage("blackhole")
        client = Redis(host="127.0.0.1", port=proxy.port, socket_timeout=30)
        bus = RedisEventBus(
            client,
            Keys(f"{namespace}:").events,
            commands=batch_for(client),
            max_length=100,
            publish_timeout=0.2,
        )
        dropped = metrics.EVENTS_DROPPED.labels(kind="order")._value.get()
        started = time.monotonic()
        await bus.publish(_order("t1", 1))
        elapsed = time.monotonic() - started
        await client.aclose()
    assert elapsed < 2.0  # the 0.2 s bound, with room for a loaded machine
    assert metrics.EVENTS_DROPPED.labels(kind="order")._value.get() == dropped + 1


async def test_a_publish_to_a_redis_that_refuses_connections_does_not_raise(
    services: Services, namespace: str
) -> None:
    async with running_proxy(urlsplit(services.redis_url).port or 6379) as proxy:
        proxy.outage("refuse")
        client = Redis(host="127.0.0.1", port=proxy.port, socket_connect_timeout=1)
        bus = RedisEventBus(
            client,
            Keys(f"{namespace}:").events,
            commands=batch_for(client),
            max_length=100,
            publish_timeout=0.5,
        )
        dropped = metrics.EVENTS_DROPPED.labels(kind="order")._value.get()
        await bus.publish(_order("t1", 1))
        await client.aclose()
    assert metrics.EVENTS_DROPPED.labels(kind="order")._value.get() == dropped + 1


async def test_a_subscriber_reads_on_after_its_connection_is_cut(
    services: Services, namespace: str, redis: Redis
) -> None:
    prefix = f"{namespace}:"
    async with running_proxy(urlsplit(services.redis_url).port or 6379) as proxy:
        client = Redis(host="127.0.0.1", port=proxy.port, decode_responses=True, socket_timeout=5)
        bus = RedisEventBus(
            client,
            Keys(prefix).events,
            commands=batch_for(client),
            max_length=100,
            publish_timeout=1,
            block=0.5,
            retry_delay=0.05,
        )
        direct = RedisEventBus(
            redis, Keys(prefix).events, commands=batch_for(redis), max_length=100, publish_timeout=1
        )
        await direct.publish(_order("t1", 1))
        events = bus.subscribe("t1", "0-0")
        assert (await _next(events)).data["order_id"] == 1
        proxy.outage("refuse")
        await direct.publish(_order("t1", 2))  # while the subscriber cannot read
        proxy.restore()
        after = await _next(events)
        await events.aclose()  # type: ignore[attr-defined]
        await client.aclose()
    assert after.data["order_id"] == 2


async def test_events_published_together_are_written_in_their_order(
    services: Services, namespace: str
) -> None:
    async with named_bus(services.redis_url, f"{namespace}:") as (bus, _):
        await bus.publish_many([_order("t1" if n % 2 else "t2", n) for n in range(1, 9)])
        odd = await take(bus.subscribe("t1", "0-0"), 4)
        even = await take(bus.subscribe("t2", "0-0"), 4)
    assert [e.data["order_id"] for e in odd] == [1, 3, 5, 7]
    assert [e.data["order_id"] for e in even] == [2, 4, 6, 8]


async def test_events_published_together_to_a_redis_that_answers_nothing_wait_out_one_timeout(
    services: Services, namespace: str
) -> None:
    async with running_proxy(urlsplit(services.redis_url).port or 6379) as proxy:
        proxy.outage("blackhole")
        client = Redis(host="127.0.0.1", port=proxy.port, socket_timeout=30)
        bus = RedisEventBus(
            client,
            Keys(f"{namespace}:").events,
            commands=batch_for(client),
            max_length=100,
            publish_timeout=0.5,
        )
        dropped = metrics.EVENTS_DROPPED.labels(kind="order")._value.get()
        started = time.monotonic()
        await bus.publish_many([_order("t1", n) for n in range(10)])
        elapsed = time.monotonic() - started
        await client.aclose()
    assert elapsed < 3.0  # one 0.5 s bound for all ten, not ten of them
    assert metrics.EVENTS_DROPPED.labels(kind="order")._value.get() == dropped + 10


class _Recorder:
    """Commands that answer at once and remember how long each run might wait."""

    def __init__(self) -> None:
        self.within: list[float] = []

    def script(self, source: str) -> Any:
        def run(
            *, keys: Sequence[str], args: Sequence[str | int | float] = (), within: float = 0.0
        ) -> asyncio.Future[int]:
            self.within.append(within)
            future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            future.set_result(len(args) - 1)
            return future

        return run


async def test_a_single_event_goes_at_once_while_a_batch_of_them_may_ride_with_other_calls(
    redis: Redis,
) -> None:
    commands = _Recorder()
    bus = RedisEventBus(
        redis, Keys("unused:").events, commands=commands, max_length=100, publish_timeout=0.25
    )
    await bus.publish(_order("t1", 1))  # a step awaits this one
    await bus.publish_many([_order("t1", 2), _order("t2", 3), _order("t1", 4)])
    assert commands.within == [0.0, 0.05, 0.05]  # one run per tenant
