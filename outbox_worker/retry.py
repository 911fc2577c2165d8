"""One outbox delivery: send once, or schedule the next try, or give up into the DLQ.

The consumer never sleeps on a failing reply: a retry is a republish into a delay
tier queue whose TTL dead-letters it back into `outbox`, so other customers'
replies keep flowing while this one waits. The reply's story (attempts, first
failure, last error) travels in its headers. Each outcome (sent, failed and retried, dlq)
is handed to the history writer, and written before the delivery is acknowledged.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import timedelta

import structlog

from orderbot.amqp.consumer import Delivery
from orderbot.amqp.dead_letters import Reason, RetryStory, park, park_unreadable
from orderbot.amqp.publisher import Publisher
from orderbot.conversation.reply_order import SENT, WAIT, ReplyOrder
from orderbot.delivery.sender import ReplySender
from orderbot.envelopes import OutboundReply, decode, utcnow
from orderbot.errors import PermanentSendError, PoisonMessage, TransientSendError
from orderbot.history import entries
from orderbot.history.models import MessageStatus
from orderbot.history.writer import HistoryWriter
from orderbot.runtime import metrics
from orderbot.runtime.waiting import until_done

log = structlog.get_logger(__name__)


def _processed(outcome: str) -> None:
    metrics.MESSAGES_PROCESSED.labels("outbox", outcome).inc()


class OutboxDelivery:
    def __init__(
        self,
        *,
        broker: Publisher,
        senders: ReplySender,
        order: ReplyOrder,
        delays: tuple[timedelta, ...],
        max_attempts: int,
        max_age: timedelta,
        stop: asyncio.Event,
        history: HistoryWriter | None = None,
    ) -> None:
        self._broker = broker
        self._history = history
        self._senders = senders
        self._order = order
        self._delays = delays
        self._max_attempts = max_attempts
        self._max_age = max_age
        self._stop = stop

    async def __call__(self, message: Delivery) -> None:
        try:
            reply = decode(OutboundReply, message.body)
        except PoisonMessage as exc:
            outbox = self._broker.topology.outbox
            await park_unreadable(self._broker, message, exc, source_queue=outbox)
            return
        with structlog.contextvars.bound_contextvars(
            correlation_id=reply.correlation_id,
            reply_id=reply.reply_id,
            tenant=reply.conversation.tenant,
            client_id=reply.conversation.client_id,
        ):
            claimant = uuid.uuid4().hex  # this delivery of the reply, through its retries
            try:
                await until_done(lambda: self._deliver(message, reply, claimant), self._stop)
                if self._history is not None:
                    # Before the ack: a process killed after it would not see the reply again.
                    await self._history.settle()
            except BaseException:
                # The redelivery comes with another claimant: a claim left behind would
                # make it WAIT and be republished (a fresh delivery count) for ever,
                # so a reply whose send keeps failing would never reach the DLQ.
                await self._release_quietly(reply, claimant)
                raise

    async def _release_quietly(self, reply: OutboundReply, claimant: str) -> None:
        try:
            async with asyncio.timeout(2):
                await self._order.release(reply.conversation, reply.reply_id, claimant)
        except Exception as exc:  # the claim expires by itself (35 s)
            log.warning("reply_claim_not_released", error=str(exc))

    async def _deliver(self, message: Delivery, reply: OutboundReply, claimant: str) -> None:
        story = RetryStory.from_message(message)
        if story.first_failure is None:
            story = replace(story, first_failure=reply.created_at)
        turn = await self._order.turn(reply.conversation, reply.reply_id, reply.text, claimant)
        if turn == SENT:
            log.info("reply_already_sent")
            # Its first delivery may have died before its history was written.
            self._record(reply, "sent")
            _processed("duplicate")
            return
        if turn == WAIT:
            log.debug("reply_waits_for_earlier")
            await self._republish(message, self._delays[0], dict(message.headers or {}))
            _processed("waiting")
            return
        try:
            # A tenant that is unknown, disabled or without this channel is a permanent
            # refusal: the reply is parked with that reason, for a replay once fixed.
            sent_id = await self._senders.send(reply.conversation, reply.text)
        except PermanentSendError as exc:
            failed = story.failed(exc.reason, retry=False)
            await self._give_up(
                message, reply, Reason.PERMANENT, f"permanent send error: {exc.reason}", failed
            )
            return
        except TransientSendError as exc:
            await self._order.release(reply.conversation, reply.reply_id, claimant)
            await self._after_transient(message, reply, story, exc)
            return
        await self._order.done(reply.conversation, reply.reply_id, sent=reply.text)
        self._record(reply, "sent", provider_message_id=sent_id)
        log.info("reply_sent", attempts=story.attempts + 1)
        _processed("sent")

    async def _after_transient(
        self,
        message: Delivery,
        reply: OutboundReply,
        story: RetryStory,
        error: TransientSendError,
    ) -> None:
        """The next delay tier, or the DLQ once the attempts or the age are used up."""
        failed = story.failed(error.reason, retry=False)
        age = utcnow() - (story.first_failure or reply.created_at)
        if failed.attempts >= self._max_attempts:
            detail = f"gave up after {failed.attempts} attempts"
        elif age >= self._max_age:
            detail = f"gave up after {age} (OUTBOX_MAX_AGE)"
        else:
            delay = self._delays[min(story.retries, len(self._delays) - 1)]
            if error.retry_after is not None:
                delay = max(delay, timedelta(seconds=error.retry_after))
            log.info(
                "reply_retry_scheduled",
                attempts=failed.attempts,
                delay=str(delay),
                error=error.reason,
            )
            scheduled = story.failed(error.reason, retry=True)
            await self._republish(message, delay, scheduled.to_headers())
            self._record(reply, "failed", error=error.reason)
            metrics.OUTBOX_RETRIES.labels(str(scheduled.attempts)).inc()
            _processed("retry_scheduled")
            return
        await self._give_up(message, reply, Reason.GAVE_UP, detail, failed)

    async def _republish(
        self, message: Delivery, delay: timedelta, headers: dict[str, object]
    ) -> None:
        await self._broker.publish(
            self._broker.topology.delay_queue(delay),
            message.body,
            message_id=message.message_id or uuid.uuid4().hex,
            correlation_id=message.correlation_id,
            headers=headers,
        )

    async def _give_up(
        self,
        message: Delivery,
        reply: OutboundReply,
        reason: Reason,
        detail: str,
        story: RetryStory,
    ) -> None:
        log.error("reply_dead_lettered", reason=detail, attempts=story.attempts)
        await park(
            self._broker,
            message.body,
            message_id=reply.reply_id,
            reason=reason,
            detail=detail,
            source_queue=self._broker.topology.outbox,
            story=story,
            conversation=reply.conversation,
            correlation_id=reply.correlation_id,
        )
        await self._order.done(reply.conversation, reply.reply_id, sent=None)
        self._record(reply, "dlq", error=detail)
        _processed("dead_lettered")

    def _record(
        self,
        reply: OutboundReply,
        status: MessageStatus,
        *,
        provider_message_id: str | None = None,
        error: str | None = None,
    ) -> None:
        if self._history is not None:
            self._history.record(
                entries.outbound(
                    reply, status, provider_message_id=provider_message_id, error=error
                )
            )
