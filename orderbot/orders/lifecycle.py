"""Moving an order through its life: one row lock, one pure check, one history row.

Two operators (or an operator and a customer's rating) changing one order at the same moment
are serialised by ``SELECT ... FOR UPDATE``: the second one reads the status the first wrote
and is checked against it, so exactly one of two conflicting moves wins and every history row
starts where the previous one ended. The event row doubles as the notification's outbox entry
(``notified_at`` NULL) in the same transaction, so a committed change is never left untold.
Once committed, the move is published as a live event (a bus that fails costs nothing
but the live view: see orderbot/events/bus.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from dialog import Actor, OrderStatus, Refused, check_transition, notifies
from orderbot.events.bus import EventBus
from orderbot.orders.live import order_event

_LOCK = "SELECT status, client_id, provider FROM orders WHERE id = $1 AND tenant = $2 FOR UPDATE"
_MOVE = "UPDATE orders SET status = $2, updated_at = now() WHERE id = $1"
_RATE = """
UPDATE orders SET status = $2, rating = $3, rated_at = now(), updated_at = now() WHERE id = $1
"""
_EVENT = """
INSERT INTO order_events (order_id, from_status, to_status, actor, source_message_id,
                          notified_at)
VALUES ($1, $2, $3, $4, $5, CASE WHEN $6::boolean THEN NULL ELSE now() END)
RETURNING id
"""
_OWN_RATING = """
SELECT o.rating FROM order_events e JOIN orders o ON o.id = e.order_id
WHERE e.order_id = $1 AND e.to_status = 'RATED' AND e.source_message_id = $2
"""


@dataclass(frozen=True, slots=True)
class StatusChanged:
    order_id: int
    source: OrderStatus
    target: OrderStatus
    event_id: int


@dataclass(frozen=True, slots=True)
class OrderNotFound:
    """No such order for this tenant: another tenant's order does not exist for the caller."""


@dataclass(frozen=True, slots=True)
class RatingStored:
    rating: int
    replayed: bool  # this very message had stored it before (a redelivery)


class OrderLifecycle:
    def __init__(self, pool: asyncpg.Pool, events: EventBus | None = None) -> None:
        self._pool = pool
        self._events = events

    async def change_status(
        self, *, tenant: str, order_id: int, target: OrderStatus, actor: str
    ) -> StatusChanged | Refused | OrderNotFound:
        """An operator's move; ``actor`` is who is recorded in the history."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_LOCK, order_id, tenant)
            if row is None:
                return OrderNotFound()
            verdict = check_transition(OrderStatus(row["status"]), target, Actor.OPERATOR)
            if isinstance(verdict, Refused):
                return verdict
            await conn.execute(_MOVE, order_id, target.value)
            event_id = await conn.fetchval(
                _EVENT, order_id, row["status"], target.value, actor, None, notifies(target)
            )
        await self._published(tenant, order_id, row, target)
        return StatusChanged(order_id, verdict.source, target, int(event_id))

    async def _published(
        self, tenant: str, order_id: int, row: asyncpg.Record, target: OrderStatus
    ) -> None:
        if self._events is None:
            return
        await self._events.publish(
            order_event(
                tenant,
                order_id=order_id,
                status=target.value,
                previous=row["status"],
                client_id=row["client_id"],
                provider=row["provider"],
            )
        )

    async def rate(
        self, *, tenant: str, order_id: int, rating: int, source_message_id: str
    ) -> RatingStored | None:
        """The customer's rating moves the order to RATED; None if it no longer expects one.

        Idempotent per message: a redelivered message finds the event it wrote and gets the
        same answer, while a rating for an order already rated by another message (or no
        longer delivered) is refused, so nothing is ever doubled or overwritten.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_LOCK, order_id, tenant)
            if row is None:
                return None
            current = row["status"]
            verdict = check_transition(OrderStatus(current), OrderStatus.RATED, Actor.CUSTOMER)
            if isinstance(verdict, Refused):
                stored = await conn.fetchval(_OWN_RATING, order_id, source_message_id)
                return None if stored is None else RatingStored(int(stored), replayed=True)
            await conn.execute(_RATE, order_id, OrderStatus.RATED.value, rating)
            await conn.execute(
                _EVENT,
                order_id,
                current,
                OrderStatus.RATED.value,
                Actor.CUSTOMER.value,
                source_message_id,
                notifies(OrderStatus.RATED),
            )
        await self._published(tenant, order_id, row, OrderStatus.RATED)
        return RatingStored(rating, replayed=False)
