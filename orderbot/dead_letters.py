"""Parking a message in the DLQ with its story in the headers.

The DLQ is where an operator looks, so every parked message says why it is there,
how often it was tried, what failed last and where it came from.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

import structlog
from aio_pika.abc import AbstractIncomingMessage

from orderbot import metrics
from orderbot.broker import BrokerLink
from orderbot.consumer import ack
from orderbot.transient import until_done

log = structlog.get_logger(__name__)

REASON = "x-reason"
ATTEMPTS = "x-attempts"
RETRIES = "x-retries"
LAST_ERROR = "x-last-error"
FIRST_FAILURE = "x-first-failure"
SOURCE_QUEUE = "x-source-queue"
PARKED_AT = "x-parked-at"
TENANT = "x-tenant"
CLIENT = "x-client"


def story(
    *,
    attempts: int,
    retries: int,
    first_failure: str,
    last_error: str,
) -> dict[str, object]:
    """The retry headers a reply carries through the outbox and into the DLQ."""
    return {
        ATTEMPTS: attempts,
        RETRIES: retries,
        FIRST_FAILURE: first_failure,
        LAST_ERROR: last_error[:1000],
    }


async def park(
    broker: BrokerLink,
    body: bytes,
    *,
    message_id: str,
    reason: str,
    source_queue: str,
    headers: Mapping[str, object] | None = None,
    correlation_id: str | None = None,
) -> None:
    """Publish to the DLQ, confirmed; the caller acks the original only after this."""
    story: dict[str, object] = dict(headers or {})
    story.update(
        {
            REASON: reason[:1000],
            SOURCE_QUEUE: source_queue,
            PARKED_AT: datetime.now(UTC).isoformat(),
        }
    )
    await broker.publish(
        broker.topology.dlq,
        body,
        message_id=message_id,
        headers=story,
        correlation_id=correlation_id,
    )
    metrics.MESSAGES_DEAD_LETTERED.labels(source_queue, _reason_class(reason)).inc()


def _reason_class(reason: str) -> str:
    """A bounded label for a free-text reason."""
    for prefix, label in (
        ("permanent send error", "permanent"),
        ("gave up after", "gave_up"),
        ("unknown schema version", "unknown_version"),
    ):
        if reason.startswith(prefix):
            return label
    return "unreadable"


async def park_unreadable(
    broker: BrokerLink,
    message: AbstractIncomingMessage,
    *,
    reason: str,
    source_queue: str,
    stop: asyncio.Event,
    headers: Mapping[str, object] | None = None,
) -> None:
    """Park a message no retry can help, as it came, then ack it: the consumer goes on."""
    log.warning("poison_message", reason=reason, message_id=message.message_id)
    await until_done(
        lambda: park(
            broker,
            message.body,
            message_id=message.message_id or uuid.uuid4().hex,
            reason=reason,
            source_queue=source_queue,
            headers=headers,
            correlation_id=message.correlation_id,
        ),
        stop,
    )
    await ack(message)
