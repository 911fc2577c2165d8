"""Live events of the history: a `message` when a row is written, a `status` when a row's
delivery status moves on. Published by the history writer after its batch is committed (and
by the server after a provider's status is), so a browser never hears of a row that is not
there; the bus never raises into the writer."""

from __future__ import annotations

from collections.abc import Sequence

from orderbot.events.bus import EventBus
from orderbot.events.models import LiveEvent
from orderbot.history.models import Written
from orderbot.history.writer import OnWritten


def event_of(row: Written) -> LiveEvent:
    if row.created:
        return LiveEvent.now(
            row.tenant,
            "message",
            conversation_id=row.conversation_id,
            message_id=row.message_id,
            direction=row.direction,
            text=row.text,
            provider_message_id=row.provider_message_id,
            status=row.status,
        )
    return LiveEvent.now(
        row.tenant,
        "status",
        conversation_id=row.conversation_id,
        message_id=row.message_id,
        status=row.status,
    )


def publisher(bus: EventBus) -> OnWritten:
    async def publish(rows: Sequence[Written]) -> None:
        await bus.publish_many([event_of(row) for row in rows])

    return publish
