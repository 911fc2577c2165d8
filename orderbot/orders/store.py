"""Orders in PostgreSQL: the dialog's insert of a confirmed order."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import orjson

from dialog import Lang, OrderDraft

# One statement, so one round trip instead of four (BEGIN, two INSERTs, COMMIT), and as
# atomic as the transaction was: the order and its first event exist together or not at
# all. The unique constraint on the source message keeps the order once-only; on a
# conflict nothing is inserted, no row comes back, and the existing id is looked up.
# notified_at takes its default (now()): the dialog's own reply is the customer's news.
_PLACE = """
WITH placed AS (
    INSERT INTO orders (tenant, provider, source_message_id, client_id,
                        client_phone, delivery_address, quantity, lang, transport, channel_id,
                        latitude, longitude, attachments)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::jsonb)
    ON CONFLICT ON CONSTRAINT orders_source_message_unique DO NOTHING
    RETURNING id, status
), event AS (
    INSERT INTO order_events (order_id, from_status, to_status, actor)
    SELECT id, NULL, status, 'dialog' FROM placed
)
SELECT id FROM placed
"""
# Separate from _PLACE: within one statement the snapshot predates a conflicting row
# that a concurrent transaction committed meanwhile, and the lookup would miss it.
_EXISTING = """
SELECT id FROM orders WHERE tenant = $1 AND provider = $2 AND source_message_id = $3
"""


@dataclass(frozen=True)
class PlacedOrder:
    id: int
    created: bool


class OrderStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def place(
        self,
        *,
        tenant: str,
        provider: str,
        source_message_id: str,
        client_id: str,
        draft: OrderDraft,
        lang: Lang = Lang.RU,
        transport: str | None = None,
        channel_id: str | None = None,
    ) -> PlacedOrder:
        """Create the order of a confirmed dialog once; a repeat returns the first one.

        A pin's coordinates and the links of what the customer sent (photos, voice
        notes) are kept with it, for the courier and the operators. The language and the
        channel are kept so that news about the order later reaches
        the customer where, and in the language in which, they ordered.
        """
        created = await self._pool.fetchval(
            _PLACE,
            tenant,
            provider,
            source_message_id,
            client_id,
            draft.phone,
            draft.address,
            draft.quantity,
            lang.value,
            transport,
            channel_id,
            draft.pin.latitude if draft.pin else None,
            draft.pin.longitude if draft.pin else None,
            orjson.dumps([a.model_dump() for a in draft.attachments]).decode(),
        )
        if created is not None:
            return PlacedOrder(id=int(created), created=True)
        existing = await self._pool.fetchval(_EXISTING, tenant, provider, source_message_id)
        return PlacedOrder(id=int(existing), created=False)
