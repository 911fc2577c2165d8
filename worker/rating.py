"""A customer's message read as the answer to "rate your order 1 to 5", when it is one.

It is one only while a rating is owed (orderbot/conversation/owed_ratings.py) and the order
dialog is idle: a customer in the middle of a new order is answering the dialog's question,
so their message goes there and the rating stays owed until the dialog is done. Every effect
is safe to repeat for a redelivered message: the stored rating is found by the message's id,
and a re-ask remembers which message made it.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import structlog
from redis.asyncio import Redis

from dialog import AskAgain, DialogState, GiveUp, RatingRules, Step, answer_rating
from dialog.rating import ask_again, thanks
from orderbot.config.settings import Settings
from orderbot.conversation.dialog_store import Begun
from orderbot.conversation.owed_ratings import OwedRating, OwedRatings
from orderbot.envelopes import Conversation, InboundMessage
from orderbot.events.bus import EventBus
from orderbot.orders.lifecycle import OrderLifecycle

log = structlog.get_logger(__name__)

IDLE = frozenset({Step.INITIAL, Step.COMPLETED})


@dataclass(frozen=True, slots=True)
class RatingAnswer:
    replies: tuple[str, ...]
    settled: int | None  # the order whose question is closed once the step is committed


class RatingDesk:
    def __init__(self, owed: OwedRatings, lifecycle: OrderLifecycle, rules: RatingRules) -> None:
        self._owed = owed
        self._lifecycle = lifecycle
        self._rules = rules

    async def answer(
        self, inbound: InboundMessage, state: DialogState, begun: Begun | None = None
    ) -> RatingAnswer | None:
        """The replies if ``inbound`` answered an owed rating; None: the dialog takes it.
        `begun`: what the step read under the lock, the owed rating with it (else it is
        read now)."""
        if state.step not in IDLE:
            return None
        conversation = inbound.conversation
        if begun is None:
            owed = await self._owed.get(conversation)
        else:
            owed = await self._owed.read(conversation, begun.raw_owed)
        if owed is None:
            return None
        # A redelivery of the message that asked again must ask again, not give up.
        asks = owed.asks - 1 if owed.asked_by == inbound.message_id else owed.asks
        verdict = answer_rating(inbound.text, asks)
        if isinstance(verdict, GiveUp):
            log.info("rating_given_up", order_id=owed.order_id)
            await self._owed.forget(conversation, owed.order_id)
            return None
        if isinstance(verdict, AskAgain):
            await self._owed.save(
                conversation,
                owed.model_copy(update={"asks": asks + 1, "asked_by": inbound.message_id}),
            )
            return RatingAnswer((ask_again(owed.lang, owed.order_id),), settled=None)
        return await self._rate(conversation, inbound, owed, verdict.rating)

    async def _rate(
        self, conversation: Conversation, inbound: InboundMessage, owed: OwedRating, rating: int
    ) -> RatingAnswer | None:
        stored = await self._lifecycle.rate(
            tenant=conversation.tenant,
            order_id=owed.order_id,
            rating=rating,
            source_message_id=inbound.message_id,
        )
        if stored is None:
            # Rated by an earlier message, or gone: nothing is owed any more.
            log.info("rating_not_expected", order_id=owed.order_id)
            await self._owed.forget(conversation, owed.order_id)
            return None
        log.info("order_rated", order_id=owed.order_id, rating=stored.rating)
        reply = thanks(stored.rating, owed.lang, self._rules)
        return RatingAnswer((reply,), settled=owed.order_id)

    async def settle(self, conversation: Conversation, answer: RatingAnswer) -> None:
        """After the step's commit: until then a redelivery must still find the question."""
        if answer.settled is not None:
            await self._owed.forget(conversation, answer.settled)


def rating_desk(
    settings: Settings, redis: Redis, pool: asyncpg.Pool, events: EventBus | None = None
) -> RatingDesk:
    return RatingDesk(
        OwedRatings(redis, settings.redis_key_prefix),
        OrderLifecycle(pool, events),
        RatingRules(promo_code=settings.promo_code, support_contact=settings.support_contact),
    )
