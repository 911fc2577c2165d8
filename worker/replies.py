"""Getting a step's replies to the customer: now if possible, else through the outbox.

A reply is sent inline with a few quick retries. When that fails, or when the
customer already has replies waiting in the outbox (their order must hold), it is
published to the outbox, confirmed, before the worker acknowledges its message.
A permanent refusal goes straight to the DLQ. No path drops a reply. Each reply's fate
(sent, queued, dlq) is handed to the history writer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

import structlog

from orderbot.amqp.dead_letters import Reason, RetryStory, park
from orderbot.amqp.publisher import Publisher
from orderbot.conversation.reply_order import ReplyOrder
from orderbot.delivery.outbox import hand_to_outbox
from orderbot.delivery.sender import ReplySender
from orderbot.envelopes import Conversation, OutboundReply, encode, utcnow
from orderbot.errors import PermanentSendError, TransientSendError
from orderbot.history import entries
from orderbot.history.models import MessageStatus
from orderbot.history.writer import HistoryWriter
from orderbot.runtime import metrics

log = structlog.get_logger(__name__)


class ReplyDispatcher:
    def __init__(
        self,
        broker: Publisher,
        senders: ReplySender,
        order: ReplyOrder,
        *,
        attempts: int,
        backoff: timedelta,
        history: HistoryWriter | None = None,
    ) -> None:
        self._broker = broker
        self._history = history
        self._senders = senders
        self._order = order
        self._attempts = attempts
        self._backoff = backoff.total_seconds()

    async def deliver(
        self,
        conversation: Conversation,
        correlation_id: str,
        texts: Sequence[str],
        *,
        waiting: bool,
    ) -> int:
        """Send `texts` in order; `waiting`: the customer has replies in the outbox (the
        step read the count under the customer's lock), so these queue behind them.
        Returns how many went out now: the step's one line at info says so (a reply's
        id is its step's message id and its index), and a reply that did not go out
        has a line of its own."""
        queued = waiting
        sent = 0
        for index, text in enumerate(texts):
            reply = OutboundReply(
                reply_id=f"{correlation_id}:{index}",
                correlation_id=correlation_id,
                conversation=conversation,
                text=text,
            )
            if queued:
                await self._to_outbox(reply, attempts=0, last_error="queued behind earlier replies")
                metrics.OUTBOX_ENQUEUED.labels("queued_behind").inc()
                continue
            try:
                sent_id = await self._send(reply)
            except TransientSendError as exc:
                log.warning("reply_to_outbox", reply_id=reply.reply_id, error=exc.reason)
                await self._to_outbox(reply, attempts=self._attempts, last_error=exc.reason)
                metrics.OUTBOX_ENQUEUED.labels("failed").inc()
                queued = True
            except PermanentSendError as exc:
                log.error("reply_refused", reply_id=reply.reply_id, error=exc.reason)
                await park(
                    self._broker,
                    encode(reply),
                    message_id=reply.reply_id,
                    reason=Reason.PERMANENT,
                    detail=f"permanent send error: {exc.reason}",
                    source_queue=self._broker.topology.outbox,
                    story=RetryStory(attempts=1, first_failure=utcnow(), last_error=exc.reason),
                    conversation=conversation,
                    correlation_id=correlation_id,
                )
                self._record(reply, "dlq", error=exc.reason)
            else:
                self._record(reply, "sent", provider_message_id=sent_id)
                sent += 1
        return sent

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

    async def _send(self, reply: OutboundReply) -> str | None:
        """Up to `attempts` tries with the quick backoff (a plain loop: tenacity's set-up
        per send is paid by every send, almost always one that succeeds at once).
        Stops at once when asked to wait beyond the quick backoff: a long Retry-After is
        the outbox's job, since waiting it out here would hold the customer's lock and a
        prefetch slot for that long."""
        attempt = 1
        while True:
            try:
                # Looked up on every try: the tenant's credentials may have just changed,
                # and a tenant without this channel is refused (to the DLQ, with why).
                sent_id = await self._senders.send(reply.conversation, reply.text)
            except TransientSendError as exc:
                if self._give_up(exc, attempt):
                    raise
                # One line per failed try: a send that outlived SEND_TIMEOUT may still
                # have reached the customer, and the retry then duplicates it.
                log.warning(
                    "reply_send_retry", reply_id=reply.reply_id, attempt=attempt, error=exc.reason
                )
                await asyncio.sleep(self._wait(exc, attempt))
                attempt += 1
                continue
            break
        log.debug("reply_sent", reply_id=reply.reply_id)
        return sent_id

    def _give_up(self, error: TransientSendError, attempt: int) -> bool:
        if attempt >= self._attempts:
            return True
        longest_quick_wait = self._backoff * 2 ** (self._attempts - 1)
        return error.retry_after is not None and error.retry_after > longest_quick_wait

    def _wait(self, error: TransientSendError, attempt: int) -> float:
        if error.retry_after is not None:
            return float(error.retry_after)
        return float(self._backoff * 2 ** (attempt - 1))

    async def _to_outbox(self, reply: OutboundReply, *, attempts: int, last_error: str) -> None:
        await hand_to_outbox(
            self._broker, self._order, reply, attempts=attempts, last_error=last_error
        )
        self._record(reply, "queued")
