"""The reconciler's page logic, without I/O: consecutive passes read disjoint windows,
our own messages and the young ones are never taken."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from orderbot.recovery.pages import (
    Chat2DeskItem,
    TwilioCursor,
    TwilioItem,
    chat2desk_ascending,
    chat2desk_descending,
    parse_chat2desk_time,
    twilio_page,
    twilio_window,
)

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_an_ascending_page_takes_customer_messages_and_stops_at_the_first_young_one() -> None:
    items = [
        Chat2DeskItem(11, "from_client", at(1)),
        Chat2DeskItem(12, "to_client", at(2)),
        Chat2DeskItem(13, "from_client", at(3)),
        Chat2DeskItem(14, "from_client", at(9)),
    ]
    verdict, last = chat2desk_ascending(
        items, after_id=10, floor=at(-3600), ceiling=at(5), limit=200
    )
    assert (verdict.take, verdict.more, last) == ((0, 2), False, 13)


def test_a_descending_first_page_keeps_below_the_young_ones_so_they_are_read_later() -> None:
    items = [
        Chat2DeskItem(14, "from_client", at(9)),
        Chat2DeskItem(13, "from_client", at(3)),
        Chat2DeskItem(12, "to_client", at(2)),
        Chat2DeskItem(5, "from_client", at(-7200)),
    ]
    verdict, last = chat2desk_descending(
        items, floor=at(-3600), ceiling=at(5), limit=200, last_id=None
    )
    assert (verdict.take, verdict.more, last) == ((1,), False, 13)


def test_an_empty_chat2desk_account_starts_reading_from_the_first_id() -> None:
    verdict, last = chat2desk_descending([], floor=at(0), ceiling=at(5), limit=200, last_id=None)
    assert (verdict.take, last) == ((), 0)


def test_two_twilio_passes_read_adjoining_windows_to_the_second() -> None:
    first = twilio_window(TwilioCursor(since=at(0)), now=at(10.7), grace=timedelta(seconds=2))
    items = [
        TwilioItem("SM2", "inbound", at(8)),
        TwilioItem("SM1", "inbound", at(7)),
        TwilioItem("SMo", "outbound-api", at(5)),
        TwilioItem("SM0", "inbound", at(-1)),
    ]
    verdict, after = twilio_page(items, first, next_uri=None)
    second = twilio_window(after, now=at(20), grace=timedelta(seconds=2))

    assert first.until == at(8)
    assert verdict.take == (1,)  # SM2 at the window's end waits for the next pass
    assert (second.since, second.until) == (at(8), at(18))


def test_a_twilio_walk_cut_by_the_page_bound_goes_on_where_it_stopped() -> None:
    window = twilio_window(TwilioCursor(since=at(0)), now=at(100), grace=timedelta(0))
    verdict, after = twilio_page([TwilioItem("SM9", "inbound", at(50))], window, next_uri="/p2")
    resumed = twilio_window(after, now=at(200), grace=timedelta(0))

    assert verdict.more
    assert (resumed.since, resumed.until, resumed.next_uri) == (at(0), at(100), "/p2")


def test_chat2desk_times_are_read_with_their_zone() -> None:
    assert parse_chat2desk_time("2026-12-01T12:00:00 UTC") == T0
    assert parse_chat2desk_time("2026-12-01T15:00:00+03:00") == T0
