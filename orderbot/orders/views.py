"""What operators read about orders: a filtered page, or one order with its history.

Pages are keyset pages (``id < after``, newest first), so a page costs the same at any depth
and an order placed while an operator pages through never shifts what comes next. Every
query is scoped to the caller's tenant in SQL: another tenant's order is simply not there.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
import orjson
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from dialog import OrderStatus, Pin, map_url

MAX_ID = 2**63 - 1  # BIGSERIAL
# Client ids are printable ASCII everywhere (the webhooks refuse anything else), which also
# keeps bytes PostgreSQL rejects in text (NUL) out of the query.
_PRINTABLE = r"^[\x21-\x7e]+$"


def _as_utc(value: datetime) -> datetime:
    """A time without an offset is UTC; a time that cannot be expressed in UTC is refused."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("date out of range") from None


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_8601(value: object) -> object:
    """Only ISO 8601 text, as the OpenAPI document says (`date-time`): pydantic would
    read `1700000000` as a Unix timestamp, in seconds or milliseconds by its size, a
    guess that turns a typo into a silently wrong page."""
    if not isinstance(value, str | datetime) or (
        isinstance(value, str) and not _ISO_DATE.match(value)
    ):
        raise ValueError("expected an ISO 8601 date-time, e.g. 2026-11-26T10:00:00Z")
    return value


UtcDatetime = Annotated[datetime, BeforeValidator(_iso_8601), AfterValidator(_as_utc)]
OrderId = Annotated[int, Field(ge=1, le=MAX_ID)]


class OrderFilter(BaseModel):
    """The query of ``GET /api/orders``; unknown parameters are refused, not ignored, so a
    misspelt filter never silently returns every order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: OrderStatus | None = Field(default=None, description="only orders in this status")
    client_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=_PRINTABLE,
        description="only this customer's orders (the provider's client id)",
    )
    created_from: UtcDatetime | None = Field(
        default=None, description="created at or after this time (ISO 8601; UTC if no offset)"
    )
    created_to: UtcDatetime | None = Field(
        default=None, description="created before this time (ISO 8601; UTC if no offset)"
    )
    after: OrderId | None = Field(
        default=None, description="the `next_after` of the previous page: orders older than it"
    )
    limit: int = Field(default=50, ge=1, le=200, description="orders per page")


class OrderSummary(BaseModel):
    id: int
    status: OrderStatus
    provider: str
    client_id: str
    client_phone: str
    delivery_address: str
    quantity: int
    lang: str
    rating: int | None
    created_at: datetime
    updated_at: datetime


class StatusEvent(BaseModel):
    from_status: OrderStatus | None
    to_status: OrderStatus
    actor: str = Field(description='who: "dialog", "customer", or the operator key\'s name')
    at: datetime


class OrderPin(BaseModel):
    latitude: float
    longitude: float
    map_url: str = Field(description="an OpenStreetMap link with a marker on the pin")


class OrderAttachment(BaseModel):
    url: str = Field(description="the provider's link to the photo, voice note or file")
    content_type: str | None


class OrderDetail(OrderSummary):
    history: list[StatusEvent] = Field(description="every status the order had, oldest first")
    location: OrderPin | None = Field(
        default=None, description="the location the customer shared as the address, if any"
    )
    attachments: list[OrderAttachment] = Field(
        default_factory=list,
        description="what the customer sent that the dialog could not read, oldest first",
    )


class OrderPage(BaseModel):
    orders: list[OrderSummary]
    next_after: int | None = Field(
        description="pass as `after` for the next page; null on the last page"
    )


_SELECT = """
SELECT id, status, provider, client_id, client_phone, delivery_address, quantity, lang,
       rating, created_at, updated_at
FROM orders
"""
_ONE = """
SELECT id, status, provider, client_id, client_phone, delivery_address, quantity, lang,
       rating, created_at, updated_at, latitude, longitude, attachments
FROM orders WHERE id = $1 AND tenant = $2
"""
# A phone is matched on its digits, anywhere in the number ("555 123" finds +996555123456);
# a tenant's orders are scanned, which an operator's search can afford.
_SEARCH = (
    _SELECT
    + r"""
WHERE tenant = $1
  AND (client_id = $2 OR ($3 <> '' AND regexp_replace(client_phone, '\D', '', 'g') LIKE $4))
ORDER BY id DESC LIMIT $5
"""
)
_HISTORY = """
SELECT from_status, to_status, actor, created_at AS at FROM order_events
WHERE order_id = $1 ORDER BY id
"""


class OrderViews:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def page(self, tenant: str, query: OrderFilter) -> OrderPage:
        clauses = ["tenant = $1"]
        params: list[Any] = [tenant]
        for column, operator, value in (
            ("status", "=", query.status.value if query.status else None),
            ("client_id", "=", query.client_id),
            ("created_at", ">=", query.created_from),
            ("created_at", "<", query.created_to),
            ("id", "<", query.after),
        ):
            if value is not None:
                params.append(value)
                clauses.append(f"{column} {operator} ${len(params)}")
        params.append(query.limit + 1)  # one more tells whether there is a next page
        # Only the constant fragments above are joined into the SQL; every value is a parameter.
        sql = _SELECT + f"WHERE {' AND '.join(clauses)} ORDER BY id DESC LIMIT ${len(params)}"
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(sql, *params)
        orders = [OrderSummary.model_validate(dict(row)) for row in rows[: query.limit]]
        more = len(rows) > query.limit
        return OrderPage(orders=orders, next_after=orders[-1].id if more else None)

    async def search(self, tenant: str, text: str, *, limit: int = 50) -> list[OrderSummary]:
        """The tenant's orders whose client id is `text`, or whose phone holds its digits
        (when it reads as a phone: five digits or more, no letters)."""
        text = text.strip()
        digits = "".join(ch for ch in text if ch.isascii() and ch.isdigit())
        if len(digits) < 5 or any(ch.isalpha() for ch in text):
            digits = ""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(_SEARCH, tenant, text, digits, f"%{digits}%", limit)
        return [OrderSummary.model_validate(dict(row)) for row in rows]

    async def detail(self, tenant: str, order_id: int) -> OrderDetail | None:
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            row = await conn.fetchrow(_ONE, order_id, tenant)
            if row is None:
                return None
            events = await conn.fetch(_HISTORY, order_id)
        found = dict(row)
        latitude, longitude = found.pop("latitude"), found.pop("longitude")
        if latitude is not None and longitude is not None:
            pin = Pin(latitude=latitude, longitude=longitude)
            found["location"] = {
                "latitude": latitude,
                "longitude": longitude,
                "map_url": map_url(pin),
            }
        found["attachments"] = orjson.loads(found["attachments"])
        return OrderDetail.model_validate({**found, "history": [dict(event) for event in events]})
