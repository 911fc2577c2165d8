"""The books of a run: what the shoppers were promised against what the system did.

Read once every process has stopped (so nothing is unacknowledged in flight), from the
places the effects live: the processed-markers and dialog states in Redis, the orders
in PostgreSQL, the replies the provider delivered, and the queues. The oracle is the
dialog itself: replaying a shopper's accepted texts through `dialog.advance` gives the
state, the replies and the orders it must have had.
"""

from __future__ import annotations

import itertools
import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg
from aio_pika.abc import AbstractChannel
from redis.asyncio import Redis

from dialog import DialogState, advance
from orderbot.amqp.topology import Topology
from orderbot.config.settings import Settings
from orderbot.conversation.keys import Keys
from orderbot.envelopes import Conversation
from tests.support.broker_tools import depth, take_all
from tests.support.customers import CLIENT_PHONE
from tests.support.reliability.chaos_provider import ChaosChat2Desk
from tests.support.reliability.faults import FaultRecord
from tests.support.reliability.load import Load, Shopper
from tests.support.reliability.spool import spooled_messages

EVIDENCE_WINDOW = 3.0  # seconds of deliveries kept around an unexplained repeat

# The report lines of every run in this pytest session, for the terminal summary.
RECORDED: list[list[str]] = []


@dataclass
class Books:
    scenario: str
    seconds: float
    customers: int = 0
    probes: int = 0
    messages: int = 0
    answers: dict[str, int] = field(default_factory=dict)
    reposts: int = 0
    steps_applied: int = 0
    steps_lost: list[str] = field(default_factory=list)
    # Each lost step's customer and when its message was accepted (seconds into the load).
    steps_lost_by: dict[str, str] = field(default_factory=dict)
    steps_lost_at: dict[str, float] = field(default_factory=dict)
    customer_of: dict[str, str] = field(default_factory=dict)  # message id -> client id
    # Customers whose messages were applied in another order than accepted: each marker
    # holds the turn its step was, so the turns must rise in the order of acceptance.
    steps_out_of_order: list[str] = field(default_factory=list)
    dialogs_off: list[str] = field(default_factory=list)
    orders_expected: int = 0
    orders_created: int = 0
    orders_missing: list[str] = field(default_factory=list)
    orders_extra: list[str] = field(default_factory=list)
    replies_expected: int = 0
    replies_delivered: int = 0
    replies_missing: int = 0
    replies_missing_by: dict[str, int] = field(default_factory=dict)  # per customer
    replies_duplicated: int = 0
    replies_unexpected: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)  # "client: text" of each repeat
    # What made each repeat: "late provider answer" (the first send timed out at the
    # worker but reached the customer), a fault between the first send and the repeat
    # ("kill", "redis_kill", ...), "lost step" (the customer's dialog went back a step
    # before it: they are asked again), or "unexplained".
    duplicates_by_cause: dict[str, int] = field(default_factory=dict)
    unexplained_duplicates: list[str] = field(default_factory=list)
    # For each unexplained repeat: the customer's deliveries around it, with their time
    # since the load began (and "late"), for the JSON report.
    evidence: dict[str, list[str]] = field(default_factory=dict)
    late_deliveries: int = 0
    provider_refusals: dict[int, int] = field(default_factory=dict)
    left_in_queues: dict[str, int] = field(default_factory=dict)
    dlq_expected: int = 0
    dlq_unexpected: list[str] = field(default_factory=list)
    dlq_missing: list[str] = field(default_factory=list)
    reply_order_left: int = 0
    # The conversation history: an accepted message without its inbound row, and a reply
    # the provider delivered without its outbound row marked sent.
    history_inbound_missing: list[str] = field(default_factory=list)
    history_replies_unsent: list[str] = field(default_factory=list)
    restarts_to_finish: int = 0  # stops that found work still queued (then: go on)
    drain_seconds: float = 0.0  # from the end of the load until nothing was left to do
    faults: list[FaultRecord] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def unfinished(self) -> bool:
        """Work still queued when the books were closed (the drain deadline passed):
        what is missing then may be "not yet" rather than lost."""
        return any(self.left_in_queues.values()) or bool(self.reply_order_left)

    @property
    def missing(self) -> int:
        """Accepted messages without their effect: a step, an order or a reply missing."""
        return len(self.steps_lost) + len(self.orders_missing) + self.replies_missing

    @property
    def lost(self) -> int:
        """Missing with nothing left anywhere that could still bring it: lost for good."""
        return 0 if self.unfinished else self.missing

    @property
    def recovery_times(self) -> list[float]:
        return [f.recovered_in for f in self.faults if f.recovered_in is not None]

    def discrepancies(self) -> list[str]:
        """Everything that does not balance; empty when the books are right."""
        found = list(self.problems)
        if self.unfinished:
            found.append(
                f"not quiescent by the drain deadline: {self.missing} effects not there yet, "
                f"still queued {self._left()}, customers with replies waiting "
                f"{self.reply_order_left}"
            )
        checks: list[tuple[object, str]] = [
            (self.steps_lost, "accepted messages never applied"),
            (self.steps_out_of_order, "customers whose steps were applied out of order"),
            (self.dialogs_off, "dialog states that differ from the accepted messages"),
            (self.orders_missing, "confirmed dialogs without their order"),
            (self.orders_extra, "orders no dialog confirmed (duplicates)"),
            (self.replies_missing, "replies never delivered"),
            (self.replies_unexpected, "replies nobody was owed, or out of order"),
            ({k: v for k, v in self.left_in_queues.items() if v}, "messages left in queues"),
            (self.dlq_unexpected, "dead-lettered messages that should not be there"),
            (self.dlq_missing, "poison messages not in the DLQ"),
            (self.reply_order_left, "customers still marked as having replies waiting"),
            (self.history_inbound_missing, "accepted messages without their history row"),
            (self.history_replies_unsent, "delivered replies without a sent history row"),
            ([f.kind for f in self.faults if f.recovered_in is None], "faults never recovered"),
        ]
        found += [f"{what}: {value}" for value, what in checks if value]
        if self.unexplained_duplicates:
            found.append(
                f"{len(self.unexplained_duplicates)} duplicated replies no fault explains: "
                f"{self.unexplained_duplicates[:10]}"
            )
        return found

    def _left(self) -> dict[str, int]:
        return {k: v for k, v in self.left_in_queues.items() if v}

    def lines(self) -> list[str]:
        answers = ", ".join(f"{k} {v}" for k, v in sorted(self.answers.items()))
        refusals = ", ".join(f"{k}: {v}" for k, v in sorted(self.provider_refusals.items()))
        causes = ", ".join(f"{k} {v}" for k, v in sorted(self.duplicates_by_cause.items()))
        recovery = self.recovery_times
        lines = [
            f"books [{self.scenario}] {self.seconds:.0f}s of load, "
            f"{self.customers} customers + {self.probes} probes",
            f"  messages  accepted {self.messages} (answers: {answers}); reposted {self.reposts}",
            f"  steps     applied {self.steps_applied}, lost {len(self.steps_lost)}, "
            f"out of order {len(self.steps_out_of_order)}, dialogs off {len(self.dialogs_off)}",
            f"  orders    expected {self.orders_expected}, created {self.orders_created}, "
            f"missing {len(self.orders_missing)}, duplicated {len(self.orders_extra)}",
            f"  replies   expected {self.replies_expected}, delivered {self.replies_delivered}, "
            f"missing {self.replies_missing}, duplicated {self.replies_duplicated} "
            f"({causes or 'none'}); late provider answers {self.late_deliveries}, "
            f"refusals: {refusals or 'none'}",
            f"  drained   in {self.drain_seconds:.1f}s after the load "
            f"(stops that found work still queued: {self.restarts_to_finish})",
            f"  queues    left {sum(self.left_in_queues.values())} {self._left() or ''}, dlq "
            f"{self.dlq_expected} expected poison, {len(self.dlq_unexpected)} unexpected, "
            f"customers with replies waiting {self.reply_order_left}",
            f"  history   accepted messages without their row {len(self.history_inbound_missing)}"
            f", delivered replies without a sent row {len(self.history_replies_unsent)}",
            f"  faults    {len(self.faults)} injected"
            + (
                f"; recovery max {max(recovery):.1f}s, mean {sum(recovery) / len(recovery):.1f}s"
                if recovery
                else ""
            ),
        ]
        lines += [
            f"    {f.at:6.1f}s {f.kind:<17} {f.detail}; answered again after {f.recovered_in}s"
            for f in sorted(self.faults, key=lambda f: f.at)
        ]
        lines.append(
            f"  LOST {self.lost}"
            + (f" (NOT YET: {self.missing})" if self.unfinished else "")
            + f", DUPLICATE ORDERS {len(self.orders_extra)}, "
            f"DUPLICATED REPLIES {self.replies_duplicated} "
            f"(unexplained {len(self.unexplained_duplicates)})"
        )
        return lines

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["lost"] = self.lost
        data["missing"] = self.missing
        return data


@dataclass(frozen=True)
class ReplyMatch:
    missing: int  # expected replies not delivered
    repeats: list[tuple[int, int]]  # (delivery index of the repeat, of its first delivery)
    unexpected: list[int]  # delivery indexes of replies nobody was owed, or out of order
    owed_index: dict[int, int]  # delivery index of an in-order delivery -> its owed index


def match_replies(expected: list[str], delivered: list[str]) -> ReplyMatch:
    """How one customer's delivered replies compare with the ones owed.

    Delivered must be the expected replies in order, where any reply already delivered
    may come again (at least once, never zero times); anything else is unexpected.
    """
    matched = 0
    first: dict[str, int] = {}  # text -> index of its latest in-order delivery
    repeats: list[tuple[int, int]] = []
    unexpected: list[int] = []
    owed_index: dict[int, int] = {}
    for index, text in enumerate(delivered):
        if matched < len(expected) and text == expected[matched]:
            first[text] = index
            owed_index[index] = matched
            matched += 1
        elif text in first:
            repeats.append((index, first[text]))
        else:
            unexpected.append(index)
    return ReplyMatch(len(expected) - matched, repeats, unexpected, owed_index)


def causes_of_repeats(
    match: ReplyMatch,
    delivered: list[str],
    log: list[tuple[float, bool]],
    born: list[float],
    faults: list[FaultRecord],
) -> list[str]:
    """Why each of `match.repeats` was delivered, in their order; `born`: for each owed
    reply, when the message that owes it was accepted.

    A late delivery is a send the sender gave up on that reached the customer anyway, so
    it and the try after it are two copies of one reply: each late delivery of a text
    explains one repeat of that text. They are counted per text, not looked for next to
    the repeat, because a text can be owed several times (three wrong phone numbers in a
    row are asked again three times) and which owed copy a repeat stands for cannot be
    told: the copies of the first may arrive late, among those of the next ones. For the
    same reason a fault explains a repeat if it explains any earlier owed delivery of the
    text.
    """
    late = Counter(text for text, (_, was_late) in zip(delivered, log, strict=True) if was_late)
    by_start = sorted(faults, key=lambda f: f.began)
    causes: list[str] = []
    for repeat, _ in match.repeats:
        text = delivered[repeat]
        if late[text] > 0:
            late[text] -= 1
            causes.append("late provider answer")
            continue
        originals = [
            (born[owed], log[index][0])
            for index, owed in match.owed_index.items()
            if index < repeat and delivered[index] == text
        ]
        explaining = (f.kind for f in by_start for b, first in originals if f.explains(b, first))
        causes.append(next(explaining, "unexplained"))
    return causes


@dataclass(frozen=True)
class Owed:
    state: DialogState
    replies: list[str]
    orders: dict[str, tuple[str, str, int]]  # source message id -> (phone, address, quantity)
    owed_for: list[int]  # for each reply, the index of the accepted message that owes it


def owed_to(shopper: Shopper) -> Owed:
    """What the system owes a shopper for its accepted texts, by the dialog's own rules."""
    state = DialogState()
    replies: list[str] = []
    orders: dict[str, tuple[str, str, int]] = {}
    owed_for: list[int] = []
    for index, (text, message_id) in enumerate(
        zip(shopper.texts, shopper.message_ids, strict=True)
    ):
        result = advance(state, text, own_phone=CLIENT_PHONE)
        state = result.state
        replies.extend(result.replies)
        owed_for += [index] * len(result.replies)
        if result.order is not None:
            draft = result.order
            orders[message_id] = (draft.phone, draft.address, draft.quantity)
    return Owed(state, replies, orders, owed_for)


def _evidence(
    owed: int,
    delivered: list[str],
    log: list[tuple[float, bool]],
    window: tuple[float, float],
    *,
    repeated: str,
    started: float,
) -> list[str]:
    """An unexplained repeat as the report shows it: how often its text was owed,
    delivered and delivered late, then the customer's deliveries within `window`, each
    with its time since the load began and its late mark."""
    late = [
        was_late for (_, was_late), text in zip(log, delivered, strict=True) if text == repeated
    ]
    return [
        f"owed {owed}, delivered {len(late)}, late {sum(late)}",
        *(
            f"{at - started:7.2f}s{' late' if was_late else ''}: {text[:50]}"
            for (at, was_late), text in zip(log, delivered, strict=True)
            if window[0] <= at <= window[1]
        ),
    ]


async def _mget(redis: Redis, keys: list[str]) -> list[str | None]:
    values: list[str | None] = []
    for start in range(0, len(keys), 1000):
        values.extend(await redis.mget(keys[start : start + 1000]))
    return values


async def close_books(
    *,
    scenario: str,
    seconds: float,
    load: Load,
    provider: ChaosChat2Desk,
    redis: Redis,
    db: asyncpg.Connection,
    amqp: AbstractChannel,
    settings: Settings,
    faults: list[FaultRecord],
    problems: list[str],
    poison_ids: set[str],
    drain_seconds: float,
    restarts_to_finish: int,
    started: float,  # time.monotonic() when the load began
) -> Books:
    shoppers = [s for s in load.shoppers if s.message_ids]
    books = Books(
        scenario=scenario,
        seconds=seconds,
        customers=len([s for s in shoppers if not s.is_probe]),
        probes=len([s for s in shoppers if s.is_probe]),
        messages=load.accepted,
        answers=dict(load.answers),
        reposts=load.reposts,
        late_deliveries=provider.late_deliveries,
        provider_refusals=dict(provider.refusals),
        faults=list(faults),
        drain_seconds=drain_seconds,
        restarts_to_finish=restarts_to_finish,
        problems=[
            *problems,
            *(f"not accepted in time: {m}" for m in load.not_accepted),
            *(f"a valid message refused: {m}" for m in load.refused_valid),
        ],
    )
    prefix, tenant = settings.redis_key_prefix, settings.tenant
    ids = [m for s in shoppers for m in s.message_ids]
    keys = Keys(prefix)
    markers = await _mget(
        redis,
        [
            keys.processed_of(f"{tenant}:chat2desk:{s.client_id}", m)
            for s in shoppers
            for m in s.message_ids
        ],
    )
    books.steps_lost = [m for m, v in zip(ids, markers, strict=True) if v is None]
    lost = set(books.steps_lost)
    books.customer_of = {m: s.client_id for s in shoppers for m in s.message_ids}
    for shopper in shoppers:
        for message_id, at in zip(shopper.message_ids, shopper.accepted_at, strict=True):
            if message_id in lost:
                books.steps_lost_by[message_id] = shopper.client_id
                books.steps_lost_at[message_id] = round(at - started, 2)
    books.steps_applied = len(ids) - len(books.steps_lost)
    turn_of = dict(zip(ids, markers, strict=True))
    for shopper in shoppers:
        turns = [int(t) for m in shopper.message_ids if (t := turn_of[m]) is not None]
        if any(later <= earlier for earlier, later in itertools.pairwise(turns)):
            books.steps_out_of_order.append(f"{shopper.client_id}: turns {turns}")

    states = await _mget(
        redis,
        [
            keys.dialog(Conversation(tenant=tenant, provider="chat2desk", client_id=s.client_id))
            for s in shoppers
        ],
    )
    rows = await db.fetch(
        """
        SELECT client_id, source_message_id, client_phone, delivery_address, quantity
        FROM orders WHERE tenant = $1 AND provider = 'chat2desk' AND client_id = ANY($2::text[])
        """,
        tenant,
        [s.client_id for s in shoppers],
    )
    created: dict[str, dict[str, tuple[str, str, int]]] = {}
    for row in rows:
        created.setdefault(row["client_id"], {})[row["source_message_id"]] = (
            row["client_phone"],
            row["delivery_address"],
            row["quantity"],
        )
    books.orders_created = len(rows)
    history = await _history_of(db, tenant, [s.client_id for s in shoppers])
    for shopper, raw_state in zip(shoppers, states, strict=True):
        owed = owed_to(shopper)
        if raw_state is None or DialogState.model_validate_json(raw_state) != owed.state:
            books.dialogs_off.append(shopper.client_id)
        placed = created.get(shopper.client_id, {})
        books.orders_expected += len(owed.orders)
        books.orders_missing += [m for m, o in owed.orders.items() if placed.get(m) != o]
        books.orders_extra += [m for m in placed if m not in owed.orders]
        delivered = provider.texts_for(shopper.client_id)
        log = provider.log_for(shopper.client_id)
        match = match_replies(owed.replies, delivered)
        books.replies_expected += len(owed.replies)
        books.replies_delivered += len(delivered)
        books.replies_missing += match.missing
        if match.missing:
            books.replies_missing_by[shopper.client_id] = match.missing
        books.replies_duplicated += len(match.repeats)
        causes: Counter[str] = Counter(books.duplicates_by_cause)
        born = [shopper.accepted_at[message] for message in owed.owed_for]
        explained = causes_of_repeats(match, delivered, log, born, books.faults)
        accepted = zip(shopper.message_ids, shopper.accepted_at, strict=True)
        went_back = min((at for m, at in accepted if m in lost), default=None)
        for (repeat, original), cause in zip(match.repeats, explained, strict=True):
            if cause == "unexplained" and went_back is not None and log[repeat][0] >= went_back:
                # The dialog is a step behind from then on: what it asks again was asked.
                cause = "lost step"
            label = f"{shopper.client_id}: {delivered[repeat][:60]}"
            books.duplicates.append(label)
            causes[cause] += 1
            if cause == "unexplained":
                first, again = log[original][0] - started, log[repeat][0] - started
                books.unexplained_duplicates.append(
                    f"{label} (first at {first:.2f}s, again at {again:.2f}s)"
                )
                books.evidence[label] = _evidence(
                    owed.replies.count(delivered[repeat]),
                    delivered,
                    log,
                    (first - EVIDENCE_WINDOW + started, again + EVIDENCE_WINDOW + started),
                    repeated=delivered[repeat],
                    started=started,
                )
        books.duplicates_by_cause = dict(causes)
        _check_history(books, shopper, delivered, {r for r, _ in match.repeats}, history)
        books.replies_unexpected += [
            f"{shopper.client_id}: {delivered[i][:60]}" for i in match.unexpected
        ]

    topology = Topology.from_settings(settings)
    for name in (*topology.partitions, topology.outbox, *(n for n, _ in topology.delay_tiers)):
        books.left_in_queues[name] = await depth(amqp, name)
    books.left_in_queues["edge spool"] = spooled_messages(settings.spool_dir)
    parked = Counter(m.message_id or "" for m in await take_all(amqp, topology.dlq))
    books.dlq_expected = sum(parked[i] for i in poison_ids)
    books.dlq_unexpected = sorted(m for m in parked if m not in poison_ids)
    books.dlq_missing = sorted(i for i in poison_ids if not parked[i])
    books.reply_order_left = len(
        [k async for k in redis.scan_iter(match=f"{prefix}outbox:*:order", count=1000)]
    )
    record(books)
    return books


async def _history_of(
    db: asyncpg.Connection, tenant: str, client_ids: list[str]
) -> dict[str, list[tuple[str, str, str, str]]]:
    """Each customer's history rows: (direction, message key, text, status)."""
    rows = await db.fetch(
        """
        SELECT c.client_id, m.direction, m.message_key, m.text, m.status
        FROM messages m JOIN conversations c ON c.id = m.conversation_id
        WHERE c.tenant = $1 AND c.provider = 'chat2desk' AND c.client_id = ANY($2::text[])
        ORDER BY m.id
        """,
        tenant,
        client_ids,
    )
    found: dict[str, list[tuple[str, str, str, str]]] = {}
    for row in rows:
        found.setdefault(row["client_id"], []).append(
            (row["direction"], row["message_key"], row["text"], row["status"])
        )
    return found


_SENT_OR_LATER = {"sent", "delivered", "read"}


def _check_history(
    books: Books,
    shopper: Shopper,
    delivered: list[str],
    repeats: set[int],
    history: dict[str, list[tuple[str, str, str, str]]],
) -> None:
    """Every accepted message has its one inbound row (the key is unique, so one at most),
    and every reply delivered (a repeat counted once) has an outbound row sent."""
    rows = history.get(shopper.client_id, [])
    inbound = {key for direction, key, _, _ in rows if direction == "in"}
    books.history_inbound_missing += [
        f"{shopper.client_id}: {m}" for m in shopper.message_ids if m not in inbound
    ]
    sent = Counter(
        text
        for direction, _, text, status in rows
        if direction == "out" and status in _SENT_OR_LATER
    )
    owed = Counter(text for i, text in enumerate(delivered) if i not in repeats)
    books.history_replies_unsent += [
        f"{shopper.client_id}: {text[:60]} (x{count})" for text, count in (owed - sent).items()
    ]


def record(books: Books) -> None:
    record_lines(books.scenario, books.lines(), books.as_json())


def record_lines(name: str, lines: list[str], data: dict[str, Any] | None = None) -> None:
    """Keep a run's report for the session summary; append it to $RELIABILITY_REPORT."""
    RECORDED.append(lines)
    path = os.environ.get("RELIABILITY_REPORT")
    if path:
        entry = {"name": name, "lines": lines, **(data or {})}
        with open(path, "a", encoding="utf-8") as report:
            report.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
