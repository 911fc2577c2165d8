"""A status move is published after its commit; a bus that is down costs the move at
most EVENTS_PUBLISH_TIMEOUT and nothing else."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import pytest
from redis.asyncio import Redis

from dialog import OrderStatus
from orderbot.conversation.batch import batch_for
from orderbot.conversation.keys import Keys
from orderbot.events.bus import RedisEventBus
from orderbot.events.memory import InMemoryEventBus
from orderbot.orders.lifecycle import OrderLifecycle, StatusChanged
from tests.support.operator_tools import insert_order
from tests.support.services import Services
from tests.support.tcp_proxy import running_proxy


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as created:
        yield created


async def test_a_move_is_published_with_where_the_order_came_from(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    order_id = await insert_order(db, tenant=tenant, client_id="9")
    bus = InMemoryEventBus()
    moved = await OrderLifecycle(pool, bus).change_status(
        tenant=tenant, order_id=order_id, target=OrderStatus.PREPARING, actor="operator"
    )
    assert isinstance(moved, StatusChanged)
    (event,) = bus.published
    assert (event.tenant, event.kind) == (tenant, "order")
    assert event.data == {
        "order_id": order_id,
        "status": "PREPARING",
        "previous": "CONFIRMED",
        "client_id": "9",
        "provider": "chat2desk",
    }


async def test_a_refused_move_publishes_nothing(pool: asyncpg.Pool, db: asyncpg.Connection) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    order_id = await insert_order(db, tenant=tenant, client_id="9")
    bus = InMemoryEventBus()
    await OrderLifecycle(pool, bus).change_status(
        tenant=tenant, order_id=order_id, target=OrderStatus.RATED, actor="operator"
    )
    assert bus.published == []


async def test_a_move_with_the_bus_unreachable_commits_within_the_bound(
    pool: asyncpg.Pool, db: asyncpg.Connection, services: Services, namespace: str
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    order_id = await insert_order(db, tenant=tenant, client_id="9")
    async with running_proxy(urlsplit(services.redis_url).port or 6379) as proxy:
        proxy.outage("blackhole")
        silent = Redis(host="127.0.0.1", port=proxy.port, socket_timeout=60)
        bus = RedisEventBus(
            silent,
            Keys(f"{namespace}:").events,
            commands=batch_for(silent),
            max_length=100,
            publish_timeout=0.2,
        )
        started = time.monotonic()
        moved = await OrderLifecycle(pool, bus).change_status(
            tenant=tenant, order_id=order_id, target=OrderStatus.PREPARING, actor="operator"
        )
        elapsed = time.monotonic() - started
        await silent.aclose()
    assert isinstance(moved, StatusChanged)
    assert await db.fetchval("SELECT status FROM orders WHERE id = $1", order_id) == "PREPARING"
    assert elapsed < 5  # 0.2 s of publish timeout, with room for a loaded machine
