"""Telling the customer about their order's new status, through the outbox.

A status change commits its history row with ``notified_at`` NULL (a transactional outbox).
This module turns such rows into replies on the ``outbox`` queue, confirmed by the broker,
and only then marks them; the outbox worker sends them with its usual retries, in order per
customer. The API handler flushes its order right after its commit; the outbox worker's relay
flushes whatever is still pending a few seconds later (the handler's publish failed, or its
process died). Rows are locked while they are published, so the two never both publish one
event; a crash between the publish and the mark publishes it again under the same reply id.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import timedelta

import asyncpg
import structlog
from pydantic import ValidationError

from dialog import Lang, OrderStatus, asks_for_rating, status_notice
from orderbot.amqp.link import BrokerLink
from orderbot.conversation.owed_ratings import OwedRatings
from orderbot.conversation.reply_order import ReplyOrder
from orderbot.delivery.outbox import hand_to_outbox
from orderbot.envelopes import Conversation, OutboundReply

log = structlog.get_logger(__name__)

_PENDING = """
SELECT e.id, e.order_id, e.to_status, o.tenant, o.provider, o.client_id, o.transport,
       o.channel_id, o.lang
FROM order_events e JOIN orders o ON o.id = e.order_id
"""
# The handler waits for a relay holding its order's rows, then finds them marked: older
# events of the order always go out before newer ones.
_PENDING_OF_ORDER = (
    _PENDING + "WHERE e.order_id = $1 AND e.notified_at IS NULL ORDER BY e.id FOR UPDATE OF e"
)
# The relay leaves fresh rows to their handler and skips rows another process holds.
_PENDING_OLDER = (
    _PENDING
    + """WHERE e.notified_at IS NULL AND e.created_at < now() - $1::interval
  AND o.tenant = ANY($3::text[])
ORDER BY e.id LIMIT $2 FOR UPDATE OF e SKIP LOCKED"""
)
_MARK = "UPDATE order_events SET notified_at = now() WHERE id = $1"


def reply_id(order_id: int, status: OrderStatus) -> str:
    """One per order and status (an order reaches each status once): repeats are recognisable."""
    return f"order-{order_id}-{status.value.lower()}"


class StatusNotifier:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        broker: BrokerLink,
        order: ReplyOrder,
        owed: OwedRatings,
    ) -> None:
        self._pool = pool
        self._broker = broker
        self._order = order
        self._owed = owed

    async def notify_order(self, order_id: int, *, lock_timeout: timedelta) -> int:
        """Publish the order's pending news, oldest first; returns how many were published."""
        return await self._flush(_PENDING_OF_ORDER, order_id, lock_timeout=lock_timeout)

    async def notify_pending(
        self, *, older_than: timedelta, tenants: Collection[str], limit: int = 100
    ) -> int:
        """Publish the news of ``tenants`` left pending for longer than ``older_than``, oldest
        first. A tenant this process does not know is not its to tell: another deployment
        sharing the database may, and this one has no credentials to send it with."""
        return await self._flush(_PENDING_OLDER, older_than, limit, list(tenants))

    async def _flush(self, query: str, *args: object, lock_timeout: timedelta | None = None) -> int:
        published = 0
        failure: Exception | None = None
        async with self._pool.acquire() as conn, conn.transaction():
            if lock_timeout is not None:
                ms = max(1, int(lock_timeout.total_seconds() * 1000))
                await conn.execute("SELECT set_config('lock_timeout', $1, true)", f"{ms}ms")
            rows: Sequence[asyncpg.Record] = await conn.fetch(query, *args)
            for row in rows:
                try:
                    await self._publish(row)
                except Exception as exc:
                    # Stop here, so no later news overtakes this one, and commit the marks
                    # of what was published; the rest stays pending for the relay.
                    failure = exc
                    break
                await conn.execute(_MARK, row["id"])
                published += 1
        if failure is not None:
            raise failure
        return published

    async def _publish(self, row: asyncpg.Record) -> None:
        try:
            status = OrderStatus(row["to_status"])
            conversation = Conversation(
                tenant=row["tenant"],
                provider=row["provider"],
                client_id=row["client_id"],
                transport=row["transport"],
                channel_id=row["channel_id"],
            )
        except (ValueError, ValidationError) as exc:
            # A row no process could ever send: blocking every later one for it helps nobody.
            log.error("status_notification_unsendable", event_id=row["id"], error=str(exc))
            return
        order_id = int(row["order_id"])
        lang = _lang(row["lang"])
        text = status_notice(status, lang, order_id)
        if text is None:
            return
        if asks_for_rating(status):
            # Before the question goes out, so that the answer always finds it.
            await self._owed.expect(conversation, order_id, lang)
        reply = OutboundReply(
            reply_id=reply_id(order_id, status),
            correlation_id=f"order-{order_id}",
            conversation=conversation,
            text=text,
        )
        await hand_to_outbox(
            self._broker,
            self._order,
            reply,
            attempts=0,
            last_error="status notification, not tried yet",
        )
        log.info(
            "status_notification_queued",
            order_id=order_id,
            status=status.value,
            reply_id=reply.reply_id,
        )


def _lang(value: object) -> Lang:
    try:
        return Lang(str(value))
    except ValueError:
        return Lang.RU
