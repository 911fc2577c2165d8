"""Parking a message in the DLQ with its story in the headers, and reading it back.

The DLQ is where an operator looks, so every parked message says why it is there (a
`Reason` code for metrics and alerts, and a sentence for people), how often it was
tried, what failed last and where it came from. A reply carries the same story
(`RetryStory`) through the outbox's retries, so what reaches the DLQ is its whole past.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum

import structlog

from orderbot.amqp.consumer import Delivery, ack_at_once
from orderbot.amqp.publisher import Publisher
from orderbot.envelopes import Conversation
from orderbot.errors import PoisonMessage
from orderbot.runtime import metrics

log = structlog.get_logger(__name__)

REASON = "x-reason"
REASON_CODE = "x-reason-code"
ATTEMPTS = "x-attempts"
RETRIES = "x-retries"
LAST_ERROR = "x-last-error"
FIRST_FAILURE = "x-first-failure"
SOURCE_QUEUE = "x-source-queue"
PARKED_AT = "x-parked-at"
TENANT = "x-tenant"
CLIENT = "x-client"

_TEXT_LIMIT = 1000  # header values an operator reads; a provider's whole page is not one


class Reason(StrEnum):
    """Why a message is in the DLQ: a closed set, so it can be a metric label."""

    PERMANENT = "permanent"  # the provider refused the reply for good
    GAVE_UP = "gave_up"  # OUTBOX_MAX_ATTEMPTS or OUTBOX_MAX_AGE reached
    UNKNOWN_VERSION = "unknown_version"  # a body of a schema version no process reads
    UNREADABLE = "unreadable"  # not JSON, not an envelope, or invalid
    RATE_LIMITED = "rate_limited"  # a customer's message past their budget: kept, replayable

    @classmethod
    def of_poison(cls, poison: PoisonMessage) -> Reason:
        return cls(poison.kind.value)


@dataclass(frozen=True, slots=True)
class RetryStory:
    """A reply's failures so far: tries made, delay tiers passed, since when, and why."""

    attempts: int = 0
    retries: int = 0
    first_failure: datetime | None = None
    last_error: str = ""

    def to_headers(self) -> dict[str, object]:
        headers: dict[str, object] = {
            ATTEMPTS: self.attempts,
            RETRIES: self.retries,
            LAST_ERROR: self.last_error[:_TEXT_LIMIT],
        }
        if self.first_failure is not None:
            headers[FIRST_FAILURE] = self.first_failure.isoformat()
        return headers

    @classmethod
    def from_headers(cls, headers: Mapping[str, object] | None) -> RetryStory:
        """The story a message carries; what is missing or malformed counts as nothing."""
        headers = headers or {}
        first: datetime | None = None
        raw = headers.get(FIRST_FAILURE)
        if isinstance(raw, str):
            try:
                first = datetime.fromisoformat(raw)
            except ValueError:
                first = None
        return cls(
            attempts=_int(headers.get(ATTEMPTS)),
            retries=_int(headers.get(RETRIES)),
            first_failure=first,
            last_error=str(headers.get(LAST_ERROR, "")),
        )

    @classmethod
    def from_message(cls, message: Delivery) -> RetryStory:
        return cls.from_headers(message.headers)

    def failed(self, error: str, *, retry: bool) -> RetryStory:
        """One more failed attempt; `retry`: and it goes to a delay tier again."""
        return replace(
            self,
            attempts=self.attempts + 1,
            retries=self.retries + 1 if retry else self.retries,
            last_error=error,
        )


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


async def park(
    broker: Publisher,
    body: bytes,
    *,
    message_id: str,
    reason: Reason,
    detail: str,
    source_queue: str,
    story: RetryStory | None = None,
    conversation: Conversation | None = None,
    headers: Mapping[str, object] | None = None,
    correlation_id: str | None = None,
    into: str | None = None,
) -> None:
    """Publish to the DLQ (or `into`: the held queue), confirmed; the caller acks the
    original only after this, and at once: a parked message leaves no marker, so a
    redelivery of the original would be parked again.

    `headers` are the message's own (kept as they came); the story, the customer and
    the reason are written over them.
    """
    parked: dict[str, object] = dict(headers or {})
    if story is not None:
        parked.update(story.to_headers())
    if conversation is not None:
        parked.update({TENANT: conversation.tenant, CLIENT: conversation.client_id})
    parked.update(
        {
            REASON: detail[:_TEXT_LIMIT],
            REASON_CODE: reason.value,
            SOURCE_QUEUE: source_queue,
            PARKED_AT: datetime.now(UTC).isoformat(),
        }
    )
    await broker.publish(
        into or broker.topology.dlq,
        body,
        message_id=message_id,
        headers=parked,
        correlation_id=correlation_id,
    )
    ack_at_once()
    metrics.MESSAGES_DEAD_LETTERED.labels(source_queue, reason.value).inc()


async def park_unreadable(
    broker: Publisher,
    message: Delivery,
    poison: PoisonMessage,
    *,
    source_queue: str,
    story: RetryStory | None = None,
) -> None:
    """Park a message no retry can help, as it came; the consumer then acknowledges it
    and goes on with the rest."""
    log.warning("poison_message", reason=str(poison), message_id=message.message_id)
    await park(
        broker,
        message.body,
        message_id=message.message_id or uuid.uuid4().hex,
        reason=Reason.of_poison(poison),
        detail=str(poison),
        source_queue=source_queue,
        story=story,
        headers=message.headers,
        correlation_id=message.correlation_id,
    )
