"""The notification relay tells the news its process's tenants have pending, and only theirs:
another deployment's rows in a shared database are its own to tell."""

from __future__ import annotations

import asyncio

import asyncpg

from dialog import Lang, OrderStatus, status_notice
from orderbot.config.settings import Settings
from tests.support.customers import Customer
from tests.support.fake_provider import FakeChat2Desk
from tests.support.operator_tools import insert_order
from tests.support.recovery import poll


async def _pending_news(db: asyncpg.Connection, order_id: int, status: OrderStatus) -> int:
    """A status change whose handler never published it, older than the relay's grace."""
    event_id: int = await db.fetchval(
        "INSERT INTO order_events (order_id, from_status, to_status, actor, created_at,"
        " notified_at) VALUES ($1, 'CONFIRMED', $2, 'operator', now() - interval '1 minute',"
        " NULL) RETURNING id",
        order_id,
        status.value,
    )
    return event_id


async def _told(db: asyncpg.Connection, event_id: int) -> bool:
    told: bool = await db.fetchval(
        "SELECT notified_at IS NOT NULL FROM order_events WHERE id = $1", event_id
    )
    return told


async def test_the_relay_tells_its_tenants_news_and_leaves_an_unknown_tenants_alone(
    settings: Settings,
    namespace: str,
    db: asyncpg.Connection,
    fake: FakeChat2Desk,
    outbox_worker: asyncio.Task[None],
) -> None:
    stranger, ours = Customer(), Customer()
    elsewhere = await insert_order(
        db, tenant=f"elsewhere-{namespace}", client_id=stranger.client_id
    )
    order_id = await insert_order(db, tenant=settings.tenant, client_id=ours.client_id)
    # The stranger's row first: a relay that took it would take it in the same scan as ours.
    theirs = await _pending_news(db, elsewhere, OrderStatus.PREPARING)
    mine = await _pending_news(db, order_id, OrderStatus.PREPARING)

    try:
        await poll(lambda: _told(db, mine))
        await fake.wait_for(lambda: fake.texts_for(ours.client_id))

        assert fake.texts_for(ours.client_id) == [
            status_notice(OrderStatus.PREPARING, Lang.EN, order_id)
        ]
        assert not await _told(db, theirs)
    finally:
        await db.execute("DELETE FROM orders WHERE id = $1", elsewhere)
