"""One customer message: one dialog step, applied exactly once.

The order of effects is what makes a crash anywhere safe: lock → skip if already applied →
load state (these three in one Redis script) → pure step → place order (unique by source
message id) → send or outbox the replies → commit state and the applied-marker together (and
release the lock, in the same script) → return, and the consumer acks. A crash before the
commit replays the step from the same state, so the same order row is found and the replies
go out again (twice, never zero times). A crash after the commit finds the marker and only
acks. A dependency that is down makes the step raise; it is run again in place, with
backoff, still holding the customer's arrival-order turn: the customer's next message
waits behind it rather than overtaking it.

A message whose step has not begun when its partition is handed to another worker (or
its channel closed) is not run here: it is left unacknowledged, and the broker delivers
it again, to whoever holds the partition next, ahead of anything newer.

A customer who writes past their budget (WEBHOOK_RATE_LIMIT_CUSTOMER a minute, per tenant
too) is not refused anywhere: the message is kept in the `held` queue with reason
`rate_limited` (not the DLQ: nothing failed, and no alert should page for it), replayable
with `orderbot dlq replay --held`, and the customer is told once a minute to slow down. A
replayed message is an operator's choice and skips the budget.

While the customer owes a rating and the dialog is idle, the message is the rating's answer
instead (worker/rating.py): same lock, same replies path, same commit of the marker, with
the dialog state unchanged but for its turn count.

While a person answers the customer (worker/handoff.py) the step is silent: marked
applied, no reply, the dialog as it was. The partition also carries the conversation's
events (an operator wrote, the dialog was closed), which go to the hand-off desk.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable

import structlog
from prometheus_client import Counter

from dialog import Attachment, DialogRules, DialogState, OrderStatus, Pin, advance, slow_down
from orderbot.amqp.consumer import Delivery, handed_back
from orderbot.amqp.dead_letters import Reason, RetryStory, park, park_unreadable
from orderbot.amqp.publisher import Publisher
from orderbot.config.settings import Settings
from orderbot.conversation.dialog_store import Begun, DialogStore
from orderbot.conversation.locks import ArrivalOrder, ClientLocks, Lease
from orderbot.envelopes import (
    Conversation,
    ConversationEvent,
    InboundMessage,
    Location,
    decode_queued,
    encode,
    utcnow,
)
from orderbot.errors import PoisonMessage, Stopping
from orderbot.events.bus import EventBus
from orderbot.history import entries
from orderbot.history.writer import HistoryWriter
from orderbot.orders.live import order_event
from orderbot.orders.store import OrderStore
from orderbot.runtime import metrics
from orderbot.runtime.logging import bound_fields
from orderbot.runtime.waiting import until_done
from orderbot.tenancy.directory import TenantDirectory
from worker.handoff import HandoffDesk
from worker.rating import RatingDesk
from worker.replies import ReplyDispatcher

log = structlog.get_logger(__name__)

REPLAYED = "x-replayed-at"  # set by `orderbot dlq replay`


class MessageProcessor:
    def __init__(
        self,
        *,
        broker: Publisher,
        dialogs: DialogStore,
        locks: ClientLocks,
        orders: OrderStore,
        replies: ReplyDispatcher,
        rules: Callable[[str], DialogRules],
        ratings: RatingDesk,
        handoff: HandoffDesk,
        budget: Callable[[str], int | None] = lambda _tenant: None,
        concurrency: int = 10,
        stop: asyncio.Event | None = None,
        history: HistoryWriter | None = None,
        events: EventBus | None = None,
    ) -> None:
        self._broker = broker
        self._history = history
        self._dialogs = dialogs
        self._locks = locks
        self._orders = orders
        self._replies = replies
        self._rules = rules  # a tenant's dialog rules
        self._ratings = ratings
        self._handoff = handoff
        self._budget = budget  # a tenant's customer messages a minute (None: no budget)
        self._arrival = ArrivalOrder()
        # Steps at once: a worker holds several partitions' deliveries, more than it runs.
        self._slots = asyncio.Semaphore(concurrency)
        self._stop = stop if stop is not None else asyncio.Event()
        self._events = events

    async def __call__(self, message: Delivery) -> None:
        try:
            inbound = decode_queued(message.body)
        except PoisonMessage as exc:
            await park_unreadable(
                self._broker,
                message,
                exc,
                source_queue=self._broker.topology.messages,  # replay routes it anew
                story=RetryStory(attempts=1),
            )
            return
        if isinstance(inbound, ConversationEvent):
            await self._on_event(message, inbound)
            return
        conversation = inbound.conversation
        with bound_fields(
            correlation_id=inbound.message_id,
            tenant=conversation.tenant,
            provider=conversation.provider,
            client_id=conversation.client_id,
        ):
            if handed_back(message):  # not worth a turn and a slot: asked again in them
                raise Stopping("the partition is being handed over; left for redelivery")
            async with self._arrival.turn(conversation.key), self._slots:
                if handed_back(message):
                    raise Stopping("the partition is being handed over; left for redelivery")
                replayed = REPLAYED in (message.headers or {})
                started = time.perf_counter()
                if self._history is not None:
                    # Also for a duplicate: its first run may have died before this was
                    # written. The entry is keyed by the message id, so it is one row.
                    self._history.record(entries.inbound(inbound))
                outcome = await until_done(
                    functools.partial(self._apply, inbound, budgeted=not replayed), self._stop
                )
            metrics.DIALOG_STEP_SECONDS.observe(time.perf_counter() - started)
            _processed(outcome).inc()
            if outcome != "duplicate":
                age = (utcnow() - inbound.received_at).total_seconds()
                metrics.MESSAGE_AGE_SECONDS.observe(max(age, 0.0))

    async def _on_event(self, message: Delivery, event: ConversationEvent) -> None:
        """An operator's message or a closed dialog takes its turn among the customer's
        messages, like one of them."""
        if handed_back(message):
            raise Stopping("the partition is being handed over; left for redelivery")
        async with self._arrival.turn(event.conversation.key), self._slots:
            if handed_back(message):
                raise Stopping("the partition is being handed over; left for redelivery")
            outcome = await until_done(functools.partial(self._handoff.on_event, event), self._stop)
        _processed(outcome).inc()

    async def _apply(self, inbound: InboundMessage, *, budgeted: bool = True) -> str:
        """Apply the step once; returns the outcome for the metrics.

        Two Redis round trips on the usual path: `begin` takes the lock and reads marker,
        state and waiting replies; the commit writes state and marker and lets the lock
        go, fenced by its token.
        """
        conversation = inbound.conversation
        per_minute = self._budget(conversation.tenant) if budgeted else None
        async with self._locks.hold_loading(
            conversation.key, self._dialogs.begin(inbound, per_minute=per_minute)
        ) as lease:
            begun = lease.loaded
            if begun.processed:
                log.info("duplicate_skipped")
                return "duplicate"
            if await self._handoff.intercepts(inbound, begun):
                await self._commit(inbound, None, lease, release=True)
                return "handed_off"
            state = begun.state()
            if begun.over_budget:
                await self._keep_for_later(inbound, state, begun, per_minute)
                return "rate_limited"
            waiting = begun.waiting_replies > 0
            rating = await self._ratings.answer(inbound, state, begun)
            if rating is not None:
                sent = await self._replies.deliver(
                    conversation, inbound.message_id, rating.replies, waiting=waiting
                )
                turned = state.model_copy(update={"turns": state.turns + 1})
                # The lock is kept until the owed question is settled below.
                await self._commit(inbound, turned, lease, release=False)
                await self._ratings.settle(conversation, rating)
                log.info("rating_step_applied", turns=turned.turns, replies_sent=sent)
                return "rating"
            result = advance(
                state,
                inbound.text,
                self._rules(conversation.tenant),
                own_phone=inbound.own_phone,
                pin=_pin(inbound.location),
                attachments=[
                    Attachment(url=a.url, content_type=a.content_type) for a in inbound.attachments
                ],
            )
            if result.order is not None:
                placed = await self._orders.place(
                    tenant=conversation.tenant,
                    provider=conversation.provider,
                    source_message_id=inbound.message_id,
                    client_id=conversation.client_id,
                    draft=result.order,
                    lang=result.state.lang,
                    transport=conversation.transport,
                    channel_id=conversation.channel_id,
                )
                log.info("order_placed", order_id=placed.id, created=placed.created)
                if placed.created:
                    metrics.ORDERS_CREATED.inc()
                    await self._order_created(conversation, placed.id)
            sent = await self._replies.deliver(
                conversation, inbound.message_id, result.replies, waiting=waiting
            )
            await self._commit(
                inbound, result.state, lease, release=True, began_at_turn=state.turns
            )
        log.info(
            "step_applied",
            step=result.state.step.value,
            turns=result.state.turns,
            replies_sent=sent,
        )
        return "applied"

    async def _order_created(self, conversation: Conversation, order_id: int) -> None:
        """Published once, by the step that inserted the row: a replay finds the row and
        says nothing (a crash between insert and publish loses only the live view)."""
        if self._events is None:
            return
        await self._events.publish(
            order_event(
                conversation.tenant,
                order_id=order_id,
                status=OrderStatus.CONFIRMED.value,
                previous=None,
                client_id=conversation.client_id,
                provider=conversation.provider,
            )
        )

    async def _keep_for_later(
        self, inbound: InboundMessage, state: DialogState, begun: Begun, per_minute: int | None
    ) -> None:
        """Park a message past the customer's budget, unapplied (a replay applies it), and
        tell the customer to slow down, once a window. The lock is let go with no commit."""
        log.warning("customer_over_budget", per_minute=per_minute)
        await park(
            self._broker,
            encode(inbound),
            message_id=inbound.message_id,
            reason=Reason.RATE_LIMITED,
            detail=f"the customer sent more than {per_minute} messages a minute",
            source_queue=self._broker.topology.messages_for(inbound.conversation.key),
            story=RetryStory(attempts=1, first_failure=utcnow(), last_error="over budget"),
            conversation=inbound.conversation,
            correlation_id=inbound.message_id,
            into=self._broker.topology.held,
        )
        if begun.say_slow_down:
            await self._replies.deliver(
                inbound.conversation,
                inbound.message_id,
                (slow_down(state.lang),),
                waiting=begun.waiting_replies > 0,
            )

    async def _commit(
        self,
        inbound: InboundMessage,
        state: DialogState | None,
        lease: Lease[Begun],
        *,
        release: bool,
        began_at_turn: int | None = None,
    ) -> None:
        """The step's history (its message, its replies) is written first, within the
        settle timeout: once the marker is committed a redelivery is a duplicate and would
        not write it again."""
        if self._history is not None:
            await self._history.settle()
        await self._dialogs.commit(
            inbound,
            state,
            lock_key=lease.key,
            lock_token=lease.token,
            release=release,
            began_at_turn=began_at_turn,
        )
        lease.released = release


def customer_budget(settings: Settings, tenants: TenantDirectory) -> Callable[[str], int | None]:
    """A tenant's customer messages a minute: its own limit, else the setting's."""

    def budget(slug: str) -> int | None:
        tenant = tenants.get(slug)
        own = tenant.webhook_rate_limit_customer if tenant is not None else None
        return own if own is not None else settings.webhook_rate_limit_customer

    return budget


@functools.cache
def _processed(outcome: str) -> Counter:
    """The counter of an outcome, looked up once: `labels` takes a lock and a dict
    lookup on every call."""
    return metrics.MESSAGES_PROCESSED.labels("messages", outcome)


def _pin(location: Location | None) -> Pin | None:
    """The envelope's location as the dialog's plain value."""
    if location is None:
        return None
    return Pin(latitude=location.latitude, longitude=location.longitude, label=location.label)
