"""The operator API under /api/: list orders, read one with its history, move its status;
list the conversations and read one's messages.

Every route but the OpenAPI document needs a bearer API key (server/auth.py) and acts for the
key's tenant only. A status change is committed first and answered 200; telling the customer
is queued on the outbox afterwards, never sent from here, and if even queueing fails the
outbox worker's relay sends it a few seconds later (orderbot/orders/notifications.py).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import asyncpg
import orjson
import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

from dialog import OrderStatus, Refused
from orderbot.conversation.owed_ratings import OwedRatings
from orderbot.conversation.reply_order import reply_order_for
from orderbot.errors import is_transient
from orderbot.history import store as history_store
from orderbot.orders.lifecycle import OrderLifecycle, OrderNotFound, StatusChanged
from orderbot.orders.notifications import StatusNotifier
from orderbot.orders.views import MAX_ID, OrderFilter, OrderViews
from orderbot.runtime.resources import postgres_options
from server.api_models import ConversationFilter, MessageFilter, StatusChange, TransitionRefused
from server.auth import KeyAuthenticator, Principal
from server.errors import json_error
from server.keys import API, BROKER, EVENTS, REDIS, SETTINGS, TENANTS
from server.openapi import openapi_document

log = structlog.get_logger(__name__)

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# How long a handler waits for a relay that holds its order's pending news before it leaves
# the news to that relay.
NOTIFY_LOCK_TIMEOUT = timedelta(seconds=2)


@dataclass(frozen=True)
class OperatorApi:
    auth: KeyAuthenticator
    views: OrderViews
    lifecycle: OrderLifecycle
    notifier: StatusNotifier
    pool: asyncpg.Pool


def register_api(app: web.Application) -> None:
    """Add the /api/ routes and their resources to the server's app."""
    app.cleanup_ctx.append(_api_ctx)
    app.router.add_get("/api/openapi.json", openapi_json)
    app.router.add_get("/api/orders", _db_errors(list_orders))
    app.router.add_get("/api/orders/{order_id}", _db_errors(get_order))
    app.router.add_post("/api/orders/{order_id}/status", _db_errors(change_status))
    app.router.add_get("/api/conversations", _db_errors(list_conversations))
    app.router.add_get("/api/conversations/{conversation_id}/messages", _db_errors(list_messages))


async def _api_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    auth = KeyAuthenticator.from_settings(settings, app[TENANTS])
    if auth is None:
        log.info("operator_api_disabled", reason="neither OPERATOR_API_KEY nor tenant keys")
        yield
        return
    # min_size=0: the server starts (and takes webhooks) while the database is down.
    pool = asyncpg.create_pool(
        settings.database_url,
        min_size=0,
        max_size=5,
        command_timeout=10,
        **postgres_options(settings),
    )
    await pool
    redis = app[REDIS]
    app[API] = OperatorApi(
        auth=auth,
        views=OrderViews(pool),
        lifecycle=OrderLifecycle(pool, app[EVENTS]),
        notifier=StatusNotifier(
            pool=pool,
            broker=app[BROKER],
            order=reply_order_for(redis, settings),
            owed=OwedRatings(redis, settings.redis_key_prefix),
        ),
        pool=pool,
    )
    try:
        yield
    finally:
        await pool.close()


def _db_errors(handler: Handler) -> Handler:
    """A database that is down or slow is the caller's cue to retry, not a server bug."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("operator_api_unavailable", error=repr(exc))
            return json_error(
                503, "database unavailable, retry later", headers={"Retry-After": "5"}
            )

    return wrapped


def authorized(request: web.Request) -> tuple[OperatorApi, Principal] | web.Response:
    api = request.app.get(API)
    if api is None:
        return json_error(
            404, "operator API is disabled", detail="set OPERATOR_API_KEY to enable it"
        )
    header = request.headers.get("Authorization")
    principal = api.auth.authenticate(header)
    if principal is None:
        challenge = 'Bearer realm="orderbot"'
        if header:
            challenge += ', error="invalid_token"'
        return json_error(
            401,
            "invalid API key" if header else "missing API key",
            detail="send the header Authorization: Bearer <OPERATOR_API_KEY>",
            headers={"WWW-Authenticate": challenge},
        )
    return api, principal


def _order_id(request: web.Request) -> int | None:
    """The path's order id; None for anything that cannot name an order."""
    raw = request.match_info["order_id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(MAX_ID)):
        return None
    value = int(raw)
    return value if 1 <= value <= MAX_ID else None


def _validated(model: type[M], data: dict[str, Any], what: str) -> M | web.Response:
    """The model, or a 422 naming each bad field (without echoing the values)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [
            {"field": ".".join(str(p) for p in err["loc"]) or what, "problem": err["msg"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]
        return json_error(422, f"invalid {what}", detail=problems)


def _query(request: web.Request, model: type[M]) -> M | web.Response:
    values: dict[str, str] = {}
    for name, value in request.query.items():
        if name in values:
            return json_error(
                422, "invalid query", detail=[{"field": name, "problem": "given more than once"}]
            )
        values[name] = value
    return _validated(model, values, "query")


async def _body(request: web.Request) -> StatusChange | web.Response:
    """Any body that is not a valid StatusChange is a 422, unparseable JSON included."""
    raw = await request.read()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        detail = "empty body" if not raw.strip() else "malformed JSON"
        return json_error(422, "invalid body", detail=f"{detail}: expected a JSON object")
    if not isinstance(data, dict):
        return json_error(422, "invalid body", detail="expected a JSON object")
    return _validated(StatusChange, data, "body")


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        text=model.model_dump_json(), status=status, content_type="application/json"
    )


def _not_found() -> web.Response:
    return json_error(404, "order not found")


async def list_orders(request: web.Request) -> web.Response:
    found = authorized(request)
    if isinstance(found, web.Response):
        return found
    api, principal = found
    query = _query(request, OrderFilter)
    if isinstance(query, web.Response):
        return query
    return _json(await api.views.page(principal.tenant, query))


async def get_order(request: web.Request) -> web.Response:
    found = authorized(request)
    if isinstance(found, web.Response):
        return found
    api, principal = found
    order_id = _order_id(request)
    detail = None if order_id is None else await api.views.detail(principal.tenant, order_id)
    return _not_found() if detail is None else _json(detail)


async def change_status(request: web.Request) -> web.Response:
    found = authorized(request)
    if isinstance(found, web.Response):
        return found
    api, principal = found
    order_id = _order_id(request)
    if order_id is None:
        return _not_found()
    change = await _body(request)
    if isinstance(change, web.Response):
        return change
    result = await move_order(api, principal, order_id, change.status)
    if isinstance(result, OrderNotFound):
        return _not_found()
    if isinstance(result, Refused):
        refused = TransitionRefused(
            error="illegal status transition",
            detail=refusal(result),
            current=result.current,
            allowed=list(result.allowed),
        )
        return _json(refused, status=409)
    detail = await api.views.detail(principal.tenant, order_id)
    return _not_found() if detail is None else _json(detail)


async def move_order(
    api: OperatorApi, principal: Principal, order_id: int, target: OrderStatus
) -> StatusChanged | Refused | OrderNotFound:
    """An operator's move, the API's and the console's alike: the lifecycle's rules and
    row, then the customer's news queued (or left to the relay)."""
    result = await api.lifecycle.change_status(
        tenant=principal.tenant, order_id=order_id, target=target, actor=principal.name
    )
    if not isinstance(result, StatusChanged):
        return result
    log.info(
        "order_status_changed",
        order_id=order_id,
        source=result.source.value,
        target=result.target.value,
        actor=principal.name,
        tenant=principal.tenant,
    )
    try:
        await api.notifier.notify_order(order_id, lock_timeout=NOTIFY_LOCK_TIMEOUT)
    except Exception as exc:
        # The change is committed and its news is in the outbox table: the relay sends it.
        log.warning("status_notification_deferred", order_id=order_id, error=repr(exc))
    return result


def refusal(refused: Refused) -> str:
    """Why a move was refused, in the words an operator reads."""
    return f"an order in {refused.current.value} cannot move to {refused.target.value}"


async def list_conversations(request: web.Request) -> web.Response:
    found = authorized(request)
    if isinstance(found, web.Response):
        return found
    api, principal = found
    query = _query(request, ConversationFilter)
    if isinstance(query, web.Response):
        return query
    page = await history_store.conversations(
        api.pool,
        principal.tenant,
        after=query.after,
        limit=query.limit,
        phone_or_client=query.phone_or_client,
    )
    return _json(page)


async def list_messages(request: web.Request) -> web.Response:
    found = authorized(request)
    if isinstance(found, web.Response):
        return found
    api, principal = found
    raw = request.match_info["conversation_id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(MAX_ID)):
        return json_error(404, "conversation not found")
    if not 1 <= int(raw) <= MAX_ID:
        return json_error(404, "conversation not found")
    query = _query(request, MessageFilter)
    if isinstance(query, web.Response):
        return query
    page = await history_store.messages(
        api.pool, principal.tenant, int(raw), after=query.after, limit=query.limit
    )
    return json_error(404, "conversation not found") if page is None else _json(page)


async def openapi_json(_: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(openapi_document()), content_type="application/json")
