"""What to take from one page of a provider's message list, and where the next read starts.

No I/O here: the clients (recovery/chat2desk.py, recovery/twilio.py) fetch pages and the
reconciler publishes; these functions decide which listed messages are a customer's and
new, and move the cursor that is kept in Redis between passes.

Both lists are read in half-open windows, so that consecutive passes neither overlap nor
leave a gap: a message younger than the grace (RECONCILE_GRACE) is left to its webhook
and to the next pass, and a message older than the cursor was read by an earlier one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict

CHAT2DESK_PAGE_LIMIT = 200  # the most Chat2Desk's GET /v1/messages returns at once


class Chat2DeskCursor(BaseModel):
    """The highest Chat2Desk message id read; None before the first pass."""

    model_config = ConfigDict(frozen=True)

    last_id: int | None = None


class TwilioCursor(BaseModel):
    """Every message sent before `since` was read. While a walk of the list is under way
    (it was cut by the page bound), it reads `[since, until)` and goes on at `next_uri`."""

    model_config = ConfigDict(frozen=True)

    since: datetime
    until: datetime | None = None
    next_uri: str | None = None


@dataclass(frozen=True, slots=True)
class Chat2DeskItem:
    id: int
    type: str
    created: datetime


@dataclass(frozen=True, slots=True)
class TwilioItem:
    sid: str
    direction: str
    date_sent: datetime | None


@dataclass(frozen=True, slots=True)
class Verdict:
    take: tuple[int, ...]  # indexes into the page of what to publish, in the page's order
    more: bool  # whether the next page may hold more to take


def whole_second(moment: datetime) -> datetime:
    """Both providers list times to the second: a window edge finer than that would
    split one second between two passes."""
    return moment.replace(microsecond=0)


def chat2desk_ascending(
    items: Sequence[Chat2DeskItem],
    *,
    after_id: int,
    floor: datetime,
    ceiling: datetime,
    limit: int,
) -> tuple[Verdict, int]:
    """A page of `order=asc&start_id=…`: the customers' messages above `after_id` of
    `[floor, ceiling)`, and the new last id. The first message at or past the ceiling
    ends the read: the ids grow with time, so everything after it is younger still. One
    older than the floor (a cursor left for longer than the lookback) is passed over."""
    take: list[int] = []
    last = after_id
    for index, item in sorted(enumerate(items), key=lambda pair: pair[1].id):
        if item.id <= after_id:
            continue  # the lower bound is checked here too, whatever start_id meant
        if item.created >= ceiling:
            return Verdict(tuple(take), more=False), last
        if item.type == "from_client" and item.created >= floor:
            take.append(index)
        last = item.id
    return Verdict(tuple(take), more=len(items) >= limit), last


def chat2desk_descending(
    items: Sequence[Chat2DeskItem],
    *,
    floor: datetime,
    ceiling: datetime,
    limit: int,
    last_id: int | None,
) -> tuple[Verdict, int | None]:
    """A page of `order=desc` (a first pass, or one given --since): the customers'
    messages of `[floor, ceiling)`, and the highest id of what is older than the ceiling
    (a message younger than it has a higher id, so an ascending read from there finds it).
    An account whose list is empty gets 0: every message to come is above it."""
    if not items and last_id is None:
        return Verdict((), more=False), 0
    take: list[int] = []
    reached_floor = False
    for index, item in enumerate(items):
        if item.created >= ceiling:
            continue
        last_id = item.id if last_id is None else max(last_id, item.id)
        if item.created < floor:
            reached_floor = True
            continue
        if item.type == "from_client":
            take.append(index)
    return Verdict(tuple(take), more=not reached_floor and len(items) >= limit), last_id


def twilio_window(cursor: TwilioCursor, now: datetime, grace: timedelta) -> TwilioCursor:
    """The window a pass reads: the one under way, or `[since, now - grace)`."""
    if cursor.until is not None and cursor.next_uri is not None:
        return cursor
    return TwilioCursor(since=cursor.since, until=whole_second(now - grace))


def twilio_page(
    items: Sequence[TwilioItem], window: TwilioCursor, *, next_uri: str | None
) -> tuple[Verdict, TwilioCursor]:
    """A page of Twilio's list (newest first): the inbound messages of the window, and the
    cursor after it. The walk ends with the page that reaches past `since` or the last
    page; the window then becomes the new lower bound. `DateSent>=` filters by whole days
    only, so the list holds older messages of the same day, and our own outbound ones:
    both are filtered here, precisely."""
    assert window.until is not None
    take: list[int] = []
    reached_since = False
    for index, item in enumerate(items):
        sent = item.date_sent
        if sent is None:
            continue  # not sent yet: an outbound message still queued
        if sent < window.since:
            reached_since = True
            continue
        if sent < window.until and item.direction == "inbound":
            take.append(index)
    if reached_since or next_uri is None:
        return Verdict(tuple(take), more=False), TwilioCursor(since=window.until)
    return Verdict(tuple(take), more=True), window.model_copy(update={"next_uri": next_uri})


def parse_chat2desk_time(value: str) -> datetime:
    """Chat2Desk writes times as `2026-12-01T22:51:02 UTC` (ISO 8601, a zone name after a
    space); an ISO offset or no zone at all (read as UTC) are accepted too."""
    text = value.strip()
    if text.endswith(" UTC"):
        text = text[:-4] + "+00:00"
    moment = datetime.fromisoformat(text.replace(" ", "T", 1) if "T" not in text else text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
