"""One outbox delivery: send once, or schedule the next try, or give up into the DLQ.

The consumer never sleeps on a failing reply: a retry is a republish into a delay
tier queue whose TTL dead-letters it back into `outbox`, so other customers'
replies keep flowing while this one waits. The reply's story (attempts, first
failure, last error) travels in its headers.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta

import structlog
from aio_pika.abc import AbstractIncomingMessage

from orderbot import dead_letters, metrics
from orderbot.broker import BrokerLink
from orderbot.consumer import ack
from orderbot.envelopes import OutboundReply, PoisonMessage, decode, utcnow
from orderbot.providers import PermanentSendError, TransientSendError
from orderbot.providers.registry import Senders
from orderbot.reply_order import SENT, WAIT, ReplyOrder
from orderbot.transient import until_done

log = structlog.get_logger(__name__)


def _processed(outcome: str) -> None:
    metrics.MESSAGES_PROCESSED.labels("outbox", outcome).inc()


def _int_header(message: AbstractIncomingMessage, name: str) -> int:
    value = (message.headers or {}).get(name)
    return value if isinstance(value, int) else 0


def _first_failure(message: AbstractIncomingMessage, reply: OutboundReply) -> datetime:
    value = (message.headers or {}).get(dead_letters.FIRST_FAILURE)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    return reply.created_at


class OutboxDelivery:
    def __init__(
        self,
        *,
        broker: BrokerLink,
        senders: Senders,
        order: ReplyOrder,
        delays: tuple[timedelta, ...],
        max_attempts: int,
        max_age: timedelta,
        stop: asyncio.Event,
    ) -> None:
        self._broker = broker
        self._senders = senders
        self._order = order
        self._delays = delays
        self._max_attempts = max_attempts
        self._max_age = max_age
        self._stop = stop

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        try:
            reply = decode(OutboundReply, message.body)
        except PoisonMessage as exc:
            await dead_letters.park_unreadable(
                self._broker,
                message,
                reason=str(exc),
                source_queue=self._broker.topology.outbox,
                stop=self._stop,
                headers=dict(message.headers or {}),
            )
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
            except BaseException:
                # The redelivery comes with another claimant: a claim left behind would
                # make it WAIT and be republished (a fresh delivery count) for ever,
                # so a reply whose send keeps failing would never reach the DLQ.
                await self._release_quietly(reply, claimant)
                raise
            await ack(message)

    async def _release_quietly(self, reply: OutboundReply, claimant: str) -> None:
        try:
            async with asyncio.timeout(2):
                await self._order.release(reply.conversation, reply.reply_id, claimant)
        except Exception as exc:  # the claim expires by itself (35 s)
            log.warning("reply_claim_not_released", error=str(exc))

    async def _deliver(
        self, message: AbstractIncomingMessage, reply: OutboundReply, claimant: str
    ) -> None:
        attempts = _int_header(message, dead_letters.ATTEMPTS)
        retries = _int_header(message, dead_letters.RETRIES)
        first_failure = _first_failure(message, reply)
        turn = await self._order.turn(reply.conversation, reply.reply_id, reply.text, claimant)
        if turn == SENT:
            log.info("reply_already_sent")
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
            await self._senders.send(reply.conversation, reply.text)
        except PermanentSendError as exc:
            await self._give_up(
                message,
                reply,
                f"permanent send error: {exc.reason}",
                attempts + 1,
                retries,
                first_failure,
                exc.reason,
            )
            return
        except TransientSendError as exc:
            await self._order.release(reply.conversation, reply.reply_id, claimant)
            attempts += 1
            age = utcnow() - first_failure
            if attempts >= self._max_attempts:
                reason = f"gave up after {attempts} attempts"
            elif age >= self._max_age:
                reason = f"gave up after {age} (OUTBOX_MAX_AGE)"
            else:
                delay = self._delays[min(retries, len(self._delays) - 1)]
                if exc.retry_after is not None:
                    delay = max(delay, timedelta(seconds=exc.retry_after))
                log.info(
                    "reply_retry_scheduled", attempts=attempts, delay=str(delay), error=exc.reason
                )
                headers = dead_letters.story(
                    attempts=attempts,
                    retries=retries + 1,
                    first_failure=first_failure.isoformat(),
                    last_error=exc.reason,
                )
                await self._republish(message, delay, headers)
                metrics.OUTBOX_RETRIES.labels(str(attempts)).inc()
                _processed("retry_scheduled")
                return
            await self._give_up(
                message, reply, reason, attempts, retries, first_failure, exc.reason
            )
            return
        await self._order.done(reply.conversation, reply.reply_id, sent=reply.text)
        log.info("reply_sent", attempts=attempts + 1)
        _processed("sent")

    async def _republish(
        self, message: AbstractIncomingMessage, delay: timedelta, headers: dict[str, object]
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
        message: AbstractIncomingMessage,
        reply: OutboundReply,
        reason: str,
        attempts: int,
        retries: int,
        first_failure: datetime,
        last_error: str,
    ) -> None:
        log.error("reply_dead_lettered", reason=reason, attempts=attempts)
        await dead_letters.park(
            self._broker,
            message.body,
            message_id=reply.reply_id,
            reason=reason,
            source_queue=self._broker.topology.outbox,
            correlation_id=reply.correlation_id,
            headers={
                **dead_letters.story(
                    attempts=attempts,
                    retries=retries,
                    first_failure=first_failure.isoformat(),
                    last_error=last_error,
                ),
                dead_letters.TENANT: reply.conversation.tenant,
                dead_letters.CLIENT: reply.conversation.client_id,
            },
        )
        await self._order.done(reply.conversation, reply.reply_id, sent=None)
        _processed("dead_lettered")
