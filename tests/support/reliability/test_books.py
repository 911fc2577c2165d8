"""The books' account of repeated replies: a repeat passes only when a late provider
answer or a fault explains it, however often its text was owed."""

from __future__ import annotations

from tests.support.reliability.books import causes_of_repeats, match_replies
from tests.support.reliability.faults import FaultRecord

GREETING, OFFER, ASK_QUANTITY = "Hello!", "Use your number?", "How many?"
REASK = "This does not look like a valid phone number."
LATE, ON_TIME = True, False


def causes(
    owed: list[str],
    deliveries: list[tuple[str, bool]],
    faults: tuple[FaultRecord, ...] = (),
) -> list[str]:
    """The cause of each repeat when `owed` (each owed by its own message, accepted five
    seconds apart from t=0) was delivered as `deliveries` (text, late?), 0.15 s apart
    from t=20."""
    delivered = [text for text, _ in deliveries]
    log = [(20 + 0.15 * i, late) for i, (_, late) in enumerate(deliveries)]
    match = match_replies(owed, delivered)
    assert (match.missing, match.unexpected) == (0, [])
    born = [5.0 * i for i in range(len(owed))]
    return causes_of_repeats(match, delivered, log, born, list(faults))


def kill_at(began: float) -> FaultRecord:
    return FaultRecord("kill", began, 0.0, "SIGKILL worker", 1.0, True, began)


def test_late_copies_of_the_first_of_three_reasks_explain_the_repeats_after_the_third() -> None:
    # The provider scenario's triple: three wrong numbers in a burst while the provider
    # stalled; the first re-ask's stalled sends reached the customer late, then all three
    # re-asks went out 150 ms apart once it healed.
    owed = [GREETING, OFFER, REASK, REASK, REASK, ASK_QUANTITY]
    deliveries = [
        (GREETING, ON_TIME),
        (OFFER, ON_TIME),
        (REASK, LATE),
        (REASK, LATE),
        (REASK, ON_TIME),
        (REASK, ON_TIME),
        (REASK, ON_TIME),
        (ASK_QUANTITY, ON_TIME),
    ]

    assert causes(owed, deliveries) == ["late provider answer"] * 2


def test_one_late_copy_explains_one_repeat_only() -> None:
    owed = [GREETING, REASK]
    deliveries = [(GREETING, ON_TIME), (REASK, LATE), (REASK, ON_TIME), (REASK, ON_TIME)]

    assert causes(owed, deliveries) == ["late provider answer", "unexplained"]


def test_a_late_copy_of_another_text_explains_nothing() -> None:
    owed = [GREETING, REASK]
    deliveries = [(GREETING, LATE), (REASK, ON_TIME), (REASK, ON_TIME)]

    assert causes(owed, deliveries) == ["unexplained"]


def test_a_text_owed_three_times_and_delivered_three_times_has_no_repeat() -> None:
    owed = [OFFER, REASK, REASK, REASK]
    deliveries = [(OFFER, ON_TIME), *[(REASK, ON_TIME)] * 3]

    assert causes(owed, deliveries) == []


def test_a_fault_explains_a_repeat_of_any_earlier_owed_copy_of_its_text() -> None:
    # The kill struck while the first re-ask (owed by the message accepted at t=5) was on
    # its way, before the second was owed (t=10): the repeat after the second delivery
    # may be a copy of the first, sent again after the kill and queued behind the second.
    owed = [GREETING, REASK, REASK]
    deliveries = [(GREETING, ON_TIME), (REASK, ON_TIME), (REASK, ON_TIME), (REASK, ON_TIME)]

    assert causes(owed, deliveries, (kill_at(5.5),)) == ["kill"]


def test_a_fault_before_every_owing_message_explains_no_repeat() -> None:
    owed = [GREETING, REASK, REASK]
    deliveries = [(GREETING, ON_TIME), (REASK, ON_TIME), (REASK, ON_TIME), (REASK, ON_TIME)]

    assert causes(owed, deliveries, (kill_at(-5.0),)) == ["unexplained"]
