"""The hand-off to a person: when the bot steps aside, and when it answers again.

A customer who writes one of HANDOFF_WORDS is told a person will answer, the operators
are called (orderbot/delivery/handoff.py), and the conversation is marked handed off
(orderbot/conversation/handoff.py). An operator writing to the customer (Chat2Desk's
`outbox` event for a message the bot did not send) marks it too, and each such message
starts HANDOFF_TTL again. While marked, the customer's messages are applied as silent
steps: recorded as processed, no reply, the dialog as it was. The mark goes when the
provider closes the dialog, or by itself after HANDOFF_TTL of operator silence.

The customer's request is handled under their lock and in this order: the reply, the
operators' call, the mark, then the step's commit. A crash before the mark repeats the
whole (the reply may be said twice, never not at all); one after it finds the mark and
only commits. An event takes the customer's lock too, so it is applied between steps, in
the order it arrived among the customer's messages, and after the step whose reply it
may be: that step remembered the reply's id before it let the lock go. A reply sent by
the outbox worker is remembered the moment Chat2Desk answers the send, not under the
lock; its event would have to cross Chat2Desk, our server and the broker before that one
Redis write to be taken for an operator's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import structlog

from dialog import Step, asks_for_person, detect_lang, handing_over, person_words
from orderbot.conversation.dialog_store import Begun
from orderbot.conversation.handoff import Handoffs, OwnMessages
from orderbot.conversation.locks import ClientLocks
from orderbot.envelopes import Conversation, ConversationEvent, InboundMessage
from orderbot.events.bus import EventBus
from orderbot.orders.live import conversation_event
from orderbot.runtime import metrics
from worker.replies import ReplyDispatcher

log = structlog.get_logger(__name__)


class OperatorCall(Protocol):
    async def call(self, message: InboundMessage) -> None:
        """Tell the operators this customer asked for a person; never raise for their
        side failing."""


class HandoffDesk:
    def __init__(
        self,
        *,
        handoffs: Handoffs,
        own: OwnMessages,
        operators: OperatorCall,
        replies: ReplyDispatcher,
        locks: ClientLocks,
        words: Iterable[str],
        events: EventBus | None = None,
    ) -> None:
        self._handoffs = handoffs
        self._own = own
        self._operators = operators
        self._replies = replies
        self._locks = locks
        self._words = person_words(words)
        self._events = events

    async def _published(self, conversation: Conversation, state: str, why: str) -> None:
        """The console shows who answers a conversation now; a lost event costs only that."""
        if self._events is not None:
            await self._events.publish(conversation_event(conversation, state=state, why=why))

    async def intercepts(self, inbound: InboundMessage, begun: Begun) -> bool:
        """Whether a person answers this message rather than the dialog: the conversation
        is handed off, or this message asks for a person (then it is handed off here)."""
        if begun.handed_off:
            log.info("handed_off_silent")
            return True
        if not asks_for_person(inbound.text, self._words):
            return False
        conversation = inbound.conversation
        state = begun.state()
        lang = detect_lang(inbound.text) if state.step is Step.INITIAL else state.lang
        await self._replies.deliver(
            conversation,
            inbound.message_id,
            (handing_over(lang),),
            waiting=begun.waiting_replies > 0,
        )
        await self._operators.call(inbound)
        await self._handoffs.hand_off(conversation, "asked")
        metrics.HANDOFFS.labels(conversation.provider, "asked").inc()
        log.info("handed_off", why="asked")
        await self._published(conversation, "handed_off", "asked")
        return True

    async def on_event(self, event: ConversationEvent) -> str:
        """Apply an event of the conversation; returns the outcome for the metrics."""
        conversation = event.conversation
        with structlog.contextvars.bound_contextvars(
            correlation_id=event.event_id,
            tenant=conversation.tenant,
            provider=conversation.provider,
            client_id=conversation.client_id,
        ):
            async with self._locks.hold(conversation.key):
                if event.event == "dialog_closed":
                    if await self._handoffs.give_back(conversation):
                        metrics.HANDOFFS.labels(conversation.provider, "closed").inc()
                        log.info("handed_back", why="dialog_closed")
                        await self._published(conversation, "bot", "dialog_closed")
                    return "dialog_closed"
                if event.message_id is not None and await self._own.sent_by_us(
                    conversation, event.message_id
                ):
                    return "own_message"
                await self._handoffs.hand_off(conversation, "operator")
                metrics.HANDOFFS.labels(conversation.provider, "operator").inc()
                log.info("handed_off", why="operator", operator_id=event.operator_id)
                await self._published(conversation, "handed_off", "operator")
                return "operator_message"
