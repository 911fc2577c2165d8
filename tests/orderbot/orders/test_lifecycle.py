"""An order's whole life: the status machine itself, then end to end through server, worker,
outbox worker, PostgreSQL and the fake Chat2Desk: every status told to the customer in order,
the rating asked for, answered and stored."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis

from dialog import (
    Actor,
    DialogState,
    Lang,
    OrderStatus,
    RatingRules,
    Refused,
    Transition,
    allowed_targets,
    check_transition,
    status_notice,
)
from dialog.lifecycle import ALLOWED, SET_BY
from dialog.rating import ask_again, thanks
from orderbot.config.settings import Settings
from orderbot.conversation.owed_ratings import OwedRatings
from orderbot.envelopes import Conversation, InboundMessage
from orderbot.orders.lifecycle import OrderLifecycle
from tests.support.customers import HAPPY_PATH_RU, Customer, converse, expected_replies, poster
from tests.support.fake_provider import FakeChat2Desk
from tests.support.operator_tools import history, insert_order, is_chain, move
from tests.support.postgres import orderbot_pool
from worker.rating import RatingDesk

Client = TestClient[Any, Any]
S = OrderStatus
PROMO = "PROMO-5STAR"
SUPPORT = "+996-555-000-111"
RULES = RatingRules(promo_code=PROMO, support_contact=SUPPORT)

# --- the status machine, pure ----------------------------------------------------------------


def test_the_forward_path_and_who_walks_it() -> None:
    path = [S.CONFIRMED, S.PREPARING, S.OUT_FOR_DELIVERY, S.DELIVERED]
    for current, target in itertools.pairwise(path):
        assert check_transition(current, target) == Transition(current, target)
    assert check_transition(S.DELIVERED, S.RATED, Actor.CUSTOMER) == Transition(
        S.DELIVERED, S.RATED
    )


@pytest.mark.parametrize("current", [S.CONFIRMED, S.PREPARING, S.OUT_FOR_DELIVERY])
def test_an_operator_can_cancel_before_delivery(current: OrderStatus) -> None:
    assert isinstance(check_transition(current, S.CANCELLED), Transition)


@pytest.mark.parametrize("current", [S.DELIVERED, S.RATED, S.CANCELLED])
def test_nobody_can_cancel_from_delivery_on(current: OrderStatus) -> None:
    for actor in Actor:
        assert isinstance(check_transition(current, S.CANCELLED, actor), Refused)


def test_only_the_customer_rates_and_only_a_delivered_order() -> None:
    assert check_transition(S.DELIVERED, S.RATED) == Refused(S.DELIVERED, S.RATED, ())
    assert check_transition(S.OUT_FOR_DELIVERY, S.RATED, Actor.CUSTOMER) == Refused(
        S.OUT_FOR_DELIVERY, S.RATED, ()
    )
    assert allowed_targets(S.OUT_FOR_DELIVERY) == (S.DELIVERED, S.CANCELLED)


@given(st.sampled_from(S), st.sampled_from(S), st.sampled_from(Actor))
def test_the_check_agrees_with_the_table(
    current: OrderStatus, target: OrderStatus, actor: Actor
) -> None:
    verdict = check_transition(current, target, actor)
    legal = target in ALLOWED[current] and SET_BY.get(target) is actor
    assert isinstance(verdict, Transition) is legal
    if isinstance(verdict, Refused):
        assert set(verdict.allowed) <= ALLOWED[current]
        assert target not in verdict.allowed


@given(st.lists(st.tuples(st.sampled_from(S), st.sampled_from(Actor)), max_size=30))
def test_any_sequence_of_moves_is_a_path_through_the_table(
    moves: list[tuple[OrderStatus, Actor]],
) -> None:
    status = S.CONFIRMED
    visited = [status]
    for target, actor in moves:
        if isinstance(check_transition(status, target, actor), Transition):
            status = target
            visited.append(status)
    assert len(visited) == len(set(visited))  # no status twice: news ids are unique per status
    assert S.CANCELLED not in visited or not {S.DELIVERED, S.RATED} & set(visited)
    assert S.RATED not in visited or visited[-2] == S.DELIVERED


def test_each_operator_status_has_news_in_both_languages() -> None:
    for status in (S.PREPARING, S.OUT_FOR_DELIVERY, S.DELIVERED, S.CANCELLED):
        for lang in Lang:
            text = status_notice(status, lang, 12)
            assert text is not None
            assert "12" in text
    assert status_notice(S.CONFIRMED, Lang.EN, 1) is None
    assert status_notice(S.RATED, Lang.EN, 1) is None


# --- end to end ------------------------------------------------------------------------------


@pytest.fixture
def config(config: dict[str, str]) -> dict[str, str]:
    return {**config, "PROMO_CODE": PROMO, "SUPPORT_CONTACT": SUPPORT}


class Life:
    """One customer who ordered through the dialog, and an operator who moves the order."""

    def __init__(
        self, client: Client, fake: FakeChat2Desk, db: asyncpg.Connection, url: str
    ) -> None:
        self.client = client
        self.fake = fake
        self.db = db
        self.post = poster(client, url)
        self.customer = Customer()
        self.order_id = 0

    @property
    def texts(self) -> list[str]:
        return self.fake.texts_for(self.customer.client_id)

    async def order(self) -> None:
        await converse(self.post, self.fake, self.customer, HAPPY_PATH_RU)
        self.order_id = await self.db.fetchval(
            "SELECT id FROM orders WHERE client_id = $1", self.customer.client_id
        )

    async def operator_moves(self, *statuses: OrderStatus) -> None:
        """Move the order, waiting for each piece of news to reach the customer."""
        for status in statuses:
            told = len(self.texts)
            code, body = await move(self.client, self.order_id, status.value)
            assert code == 200, body
            await self.fake.wait_for(lambda n=told: len(self.texts) > n)

    async def says(self, *texts: str) -> None:
        await converse(self.post, self.fake, self.customer, texts)

    def news(self, *statuses: OrderStatus) -> list[str]:
        return [status_notice(s, Lang.RU, self.order_id) or "" for s in statuses]


@pytest.fixture
def life(
    client: Client,
    worker: asyncio.Task[None],
    outbox_worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    db: asyncpg.Connection,
    webhook_url: Callable[[str], str],
) -> Life:
    return Life(client, fake, db, webhook_url(""))


FORWARD = (S.PREPARING, S.OUT_FOR_DELIVERY, S.DELIVERED)


async def test_a_full_life_rated_5_gets_the_promo(life: Life, db: asyncpg.Connection) -> None:
    await life.order()
    await life.operator_moves(*FORWARD)
    await life.says("5")

    assert life.texts == [
        *expected_replies(HAPPY_PATH_RU),
        *life.news(*FORWARD),
        thanks(5, Lang.RU, RULES),
    ]
    assert PROMO in life.texts[-1]
    order = await db.fetchrow("SELECT * FROM orders WHERE id = $1", life.order_id)
    assert order is not None
    assert (order["status"], order["rating"], order["lang"]) == ("RATED", 5, "ru")
    assert order["rated_at"] is not None
    events = await history(db, life.order_id)
    assert events == [
        (None, "CONFIRMED", "dialog"),
        ("CONFIRMED", "PREPARING", "operator"),
        ("PREPARING", "OUT_FOR_DELIVERY", "operator"),
        ("OUT_FOR_DELIVERY", "DELIVERED", "operator"),
        ("DELIVERED", "RATED", "customer"),
    ]
    sent = life.fake.received[-2]  # the DELIVERED news went out on the customer's channel
    assert (sent.body["transport"], sent.body["channel_id"]) == ("whatsapp", 4242)


async def test_a_rating_of_2_in_stars_gets_the_apology_with_the_support_contact(
    life: Life, db: asyncpg.Connection
) -> None:
    await life.order()
    await life.operator_moves(*FORWARD)
    await life.says("⭐️⭐️")

    assert life.texts[-1] == thanks(2, Lang.RU, RULES)
    assert SUPPORT in life.texts[-1]
    assert await db.fetchval("SELECT rating FROM orders WHERE id = $1", life.order_id) == 2


async def test_a_cancelled_order_is_told_and_asks_for_no_rating(
    life: Life, redis: Redis, settings: Settings
) -> None:
    await life.order()
    await life.operator_moves(S.PREPARING, S.CANCELLED)
    await life.says("5")

    assert life.texts[-3:-1] == life.news(S.PREPARING, S.CANCELLED)
    assert life.texts[-1] == expected_replies(["5"])[0]  # a new order dialog starts
    assert not await redis.keys(f"{settings.redis_key_prefix}rating:*")


async def test_an_unreadable_rating_is_asked_again_once_then_the_dialog_answers(
    life: Life, db: asyncpg.Connection
) -> None:
    await life.order()
    await life.operator_moves(*FORWARD)
    await life.says("отлично", "Привет", "5")

    assert life.texts[-3:] == [
        ask_again(Lang.RU, life.order_id),
        *expected_replies(["Привет", "5"]),  # the greeting, then "5" is a too short address
    ]
    assert await db.fetchval("SELECT status FROM orders WHERE id = $1", life.order_id) == (
        "DELIVERED"
    )


async def test_a_customer_in_a_new_order_dialog_gets_the_dialog_and_rates_afterwards(
    life: Life, db: asyncpg.Connection
) -> None:
    await life.order()
    await life.says("Здравствуйте")  # a second order begins before the first one arrives
    await life.operator_moves(*FORWARD)
    await life.says(*HAPPY_PATH_RU[1:])  # the dialog's answers, not rating questions
    second = HAPPY_PATH_RU[1:]
    assert life.texts[-len(second) :] == expected_replies(HAPPY_PATH_RU)[1:]

    await life.says("4")

    assert life.texts[-1] == thanks(4, Lang.RU, RULES)
    statuses = await db.fetch(
        "SELECT status, rating FROM orders WHERE client_id = $1 ORDER BY id",
        life.customer.client_id,
    )
    assert [(r["status"], r["rating"]) for r in statuses] == [("RATED", 4), ("CONFIRMED", None)]


async def test_a_rating_answer_repeated_after_a_crash_rates_once_and_answers_the_same(
    db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    """What a worker killed between the database commit and the dialog commit would replay."""
    customer = Customer()
    order_id = await insert_order(
        db, tenant=settings.tenant, client_id=customer.client_id, status="DELIVERED"
    )
    conversation = Conversation(
        tenant=settings.tenant, provider="chat2desk", client_id=customer.client_id
    )
    owed = OwedRatings(redis, settings.redis_key_prefix)
    await owed.expect(conversation, order_id, Lang.EN)
    async with orderbot_pool(settings, min_size=1, max_size=2) as pool:
        desk = RatingDesk(owed, OrderLifecycle(pool), RULES)
        idle = DialogState()
        rating = InboundMessage(message_id="m-rate", conversation=conversation, text="5")
        first = await desk.answer(rating, idle)
        again = await desk.answer(rating, idle)  # the redelivery, before the commit
        other = InboundMessage(message_id="m-other", conversation=conversation, text="1")
        late = await desk.answer(other, idle)  # rated already: not a rating any more

    assert first is not None
    assert again is not None
    assert first.replies == again.replies == (thanks(5, Lang.EN, RULES),)
    assert late is None
    events = await history(db, order_id)
    assert [e[1] for e in events] == ["DELIVERED", "RATED"]
    assert is_chain(events)
    assert await db.fetchval("SELECT rating FROM orders WHERE id = $1", order_id) == 5
    assert await owed.get(conversation) is None


async def test_a_delivered_order_of_another_tenant_cannot_be_rated_by_this_customer(
    db: asyncpg.Connection, settings: Settings, namespace: str
) -> None:
    order_id = await insert_order(
        db, tenant=f"other-{namespace}", client_id="1", status="DELIVERED"
    )
    async with orderbot_pool(settings, min_size=1, max_size=1) as pool:
        stored = await OrderLifecycle(pool).rate(
            tenant=settings.tenant, order_id=order_id, rating=5, source_message_id="m"
        )
    assert stored is None
    assert await db.fetchval("SELECT status FROM orders WHERE id = $1", order_id) == "DELIVERED"
