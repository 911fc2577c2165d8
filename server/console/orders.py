"""The orders board, one order's page, search, and the status buttons.

A button is offered for each move the lifecycle allows an operator from the order's
status (`allowed_targets`), and pressing one goes through the very call the API makes
(`move_order`), so the console can never move an order the API would refuse; a move
refused all the same (someone else moved it first) shows the lifecycle's reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from dialog import OrderStatus, Refused, allowed_targets
from orderbot.history import store as history_store
from orderbot.orders.lifecycle import OrderNotFound
from orderbot.orders.views import MAX_ID, OrderFilter, OrderSummary
from server.api import move_order, refusal
from server.console.access import Operator, page, posted_form, signed_in
from server.console.live import latest_event_id

# The board's columns, in the order of an order's life.
COLUMNS = tuple(OrderStatus)
PER_COLUMN = 50
CONVERSATION_MESSAGES = 200
_MAX_SEARCH = 128


@dataclass(frozen=True)
class Card:
    order: OrderSummary
    moves: tuple[OrderStatus, ...]


def card(order: OrderSummary) -> Card:
    return Card(order, allowed_targets(order.status))


def _order_id(request: web.Request) -> int | None:
    raw = request.match_info["order_id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(MAX_ID)):
        return None
    value = int(raw)
    return value if 1 <= value <= MAX_ID else None


def _search_text(request: web.Request) -> str | None:
    text = request.query.get("q", "").strip()
    if not text or len(text) > _MAX_SEARCH or not text.isprintable():
        return None
    return text


async def board(request: web.Request) -> web.Response:
    operator = await signed_in(request)
    text = _search_text(request)
    if text is not None:
        found = await operator.api.views.search(operator.tenant, text, limit=PER_COLUMN)
        results = {"query": text, "results": [card(order) for order in found]}
        return page(request, "search.html", results, operator=operator)
    since = await latest_event_id(request, operator.tenant)  # before the orders are read
    columns = []
    for status in COLUMNS:
        orders = await operator.api.views.page(
            operator.tenant, OrderFilter(status=status, limit=PER_COLUMN)
        )
        columns.append((status, [card(order) for order in orders.orders]))
    context: dict[str, object] = {"columns": columns, "last_event_id": since}
    return page(request, "board.html", context, operator=operator)


def _not_found(request: web.Request, operator: Operator) -> web.Response:
    return page(request, "error.html", {"message": "no such order"}, 404, operator=operator)


async def order_page(
    request: web.Request, operator: Operator, order_id: int, error: str | None = None
) -> web.Response:
    since = await latest_event_id(request, operator.tenant)
    detail = await operator.api.views.detail(operator.tenant, order_id)
    if detail is None:
        return _not_found(request, operator)
    pool = operator.api.pool
    conversation = await history_store.conversation_of(
        pool, operator.tenant, detail.provider, detail.client_id
    )
    messages = None
    if conversation is not None:
        messages = await history_store.messages(
            pool, operator.tenant, conversation.id, limit=CONVERSATION_MESSAGES
        )
    context = {
        "order": detail,
        "moves": allowed_targets(detail.status),
        "error": error,
        "conversation": messages,
        "last_event_id": since,
    }
    return page(request, "order.html", context, 409 if error else 200, operator=operator)


async def order(request: web.Request) -> web.Response:
    operator = await signed_in(request)
    order_id = _order_id(request)
    if order_id is None:
        return _not_found(request, operator)
    return await order_page(request, operator, order_id)


async def order_card(request: web.Request) -> web.Response:
    """One card of the board, for the page's script to put in place on a live event."""
    operator = await signed_in(request)
    order_id = _order_id(request)
    detail = (
        None if order_id is None else await operator.api.views.detail(operator.tenant, order_id)
    )
    if detail is None:
        return _not_found(request, operator)
    return page(request, "card.html", {"card": card(detail)}, operator=operator)


async def move(request: web.Request) -> web.StreamResponse:
    operator = await signed_in(request)
    order_id = _order_id(request)
    if order_id is None:
        return _not_found(request, operator)
    form = await posted_form(request, operator)
    if isinstance(form, web.Response):
        return form
    raw = form.get("status")
    try:
        target = OrderStatus(raw) if isinstance(raw, str) else None
    except ValueError:
        target = None
    if target is None:
        return await order_page(request, operator, order_id, error="no such status")
    result = await move_order(operator.api, operator.principal, order_id, target)
    if isinstance(result, OrderNotFound):
        return _not_found(request, operator)
    if isinstance(result, Refused):
        return await order_page(request, operator, order_id, error=refusal(result))
    back = "/console/" if form.get("back") == "board" else f"/console/orders/{order_id}"
    raise web.HTTPSeeOther(back)
