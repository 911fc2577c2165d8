"""The web chat: orderbot's own page where a customer talks to the bot, as a provider
(`webchat`) next to Chat2Desk and Twilio.

A customer's message takes the same edge as a webhook's (validated, length-limited,
published to its partition or spooled, server/ingest.py), then the same worker,
dialog, outbox and DLQ. Its id is the page's own (random, made before the first try),
so a post the page repeats after a lost answer is one message: the worker's dedupe and
the orders' unique key see the same id. The customer is a signed cookie
(server/webchat_cookie.py), the page's only credential; its tenant is the URL's.

Replies and order news reach the page through the session's chat log, a Redis stream
the webchat sender appends to (orderbot/delivery/webchat.py) and the page reads as
Server-Sent Events. The customer's own messages are appended there too, before they
are queued, so a reloaded page shows the whole conversation in order; that append is
best effort (bounded, never a refusal), the page having shown the message already.

Every asset the page needs is served from here: no CDN, no build step.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Annotated
from urllib.parse import urlsplit

import orjson
import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from orderbot.conversation.chat_log import ChatEntry, ChatLog
from orderbot.delivery.webchat import chat_log
from orderbot.envelopes import Conversation, InboundMessage
from orderbot.events.bus import is_event_id
from orderbot.runtime import metrics
from orderbot.tenancy.directory import Tenant
from server import webchat_cookie
from server.errors import json_error
from server.ingest import parse_json, validation_error
from server.keys import CLOSING, INGEST, REDIS, SETTINGS, TENANTS, WEBCHAT
from server.sse import SseMessage, StreamSlots, stream_events, too_many_streams
from server.text_rules import DROP_CONTROLS

log = structlog.get_logger(__name__)

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "templates" / "chat" / "page.html"
STATIC = HERE / "static" / "chat"
ASSETS = {
    "chat.js": "text/javascript",
    "chat.css": "text/css",
    "widget.js": "text/javascript",
}
# Open streams of one session (a customer's tabs); the server's own connection cap
# (HTTP_MAX_CONNECTIONS) bounds them all.
STREAMS_PER_SESSION = 4
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; base-uri 'none'; "
    "form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


@dataclass(frozen=True)
class Webchat:
    secret: str
    log: ChatLog
    page: Template
    assets: dict[str, Asset]
    slots: StreamSlots
    echo_timeout: float


class WebchatPost(BaseModel):
    """What the page posts: its own id of the message, and the text."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{8,64}$")
    text: Annotated[str, Field(min_length=1, max_length=100_000), DROP_CONTROLS]


def _load_assets() -> dict[str, Asset]:
    found = {}
    for name, content_type in ASSETS.items():
        body = (STATIC / name).read_bytes()
        found[name] = Asset(body, content_type, f'"{hashlib.sha256(body).hexdigest()[:16]}"')
    return found


async def webchat_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    secret = settings.webchat_secret.get_secret_value() if settings.webchat_secret else ""
    if not secret:
        log.info("webchat_disabled", reason="WEBCHAT_SECRET is not set")
        yield
        return
    app[WEBCHAT] = Webchat(
        secret=secret,
        log=chat_log(app[REDIS], settings),
        page=Template(TEMPLATE.read_text(encoding="utf-8")),
        assets=_load_assets(),
        slots=StreamSlots(STREAMS_PER_SESSION),
        echo_timeout=settings.events_publish_timeout.total_seconds(),
    )
    yield


def register_webchat(app: web.Application) -> None:
    app.cleanup_ctx.append(webchat_ctx)
    # Before /chat/{tenant}: neither "widget.js" nor "-" can be a tenant's slug.
    app.router.add_get("/chat/widget.js", widget_js)
    app.router.add_get("/chat/-/{name}", chat_asset)
    app.router.add_get("/chat", chat_page)
    app.router.add_get("/chat/{tenant}", chat_page)
    app.router.add_post("/chat/{tenant}/messages", chat_post)
    app.router.add_get("/chat/{tenant}/events", chat_events)


def _webchat(request: web.Request) -> Webchat | web.Response:
    chat = request.app.get(WEBCHAT)
    if chat is None:
        return json_error(404, "the web chat is off", detail="set WEBCHAT_SECRET to turn it on")
    return chat


def _tenant(request: web.Request, slug: str) -> Tenant | web.Response:
    directory = request.app[TENANTS]
    tenant = directory.get(slug)
    if tenant is None:
        if directory.unavailable(slug):
            return json_error(
                503, "tenant not available, retry later", headers={"Retry-After": "5"}
            )
        return json_error(404, "unknown tenant")
    if not tenant.active:
        return json_error(403, "tenant disabled")
    return tenant


def _slug(request: web.Request) -> str:
    return request.match_info.get("tenant") or request.app[SETTINGS].tenant


def _session(request: web.Request, chat: Webchat, slug: str) -> str | web.Response:
    value = request.cookies.get(webchat_cookie.COOKIE)
    if not value:
        return json_error(
            401, "missing chat session", detail=f"open /chat/{slug} first: it sets the cookie"
        )
    session = webchat_cookie.verify(chat.secret, slug, value)
    if session is None:
        return json_error(403, "invalid chat session", detail=f"open /chat/{slug} again")
    return session


def _conversation(tenant: str, session: str) -> Conversation:
    return Conversation(tenant=tenant, provider="webchat", client_id=session)


def _secure(request: web.Request) -> bool:
    """Whether the browser reached us over HTTPS: directly, or at PUBLIC_BASE_URL's
    https host through a proxy that ends TLS (the request itself is then plain)."""
    if request.secure:
        return True
    base = urlsplit(request.app[SETTINGS].public_base_url or "")
    return base.scheme == "https" and base.netloc.lower() == request.host.lower()


async def chat_page(request: web.Request) -> web.Response:
    chat = _webchat(request)
    if isinstance(chat, web.Response):
        return chat
    slug = _slug(request)
    tenant = _tenant(request, slug)
    if isinstance(tenant, web.Response):
        return tenant
    business = tenant.business_name or request.app[SETTINGS].business_name
    base = f"/chat/{slug}"
    page = chat.page.substitute(
        business=html.escape(business),
        tenant=html.escape(slug),
        post_url=html.escape(f"{base}/messages"),
        events_url=html.escape(f"{base}/events"),
        assets="/chat/-",
        max_text=str(request.app[SETTINGS].webchat_max_text),
    )
    response = web.Response(text=page, content_type="text/html", headers=_PAGE_HEADERS)
    cookie = request.cookies.get(webchat_cookie.COOKIE)
    if not cookie or webchat_cookie.verify(chat.secret, slug, cookie) is None:
        _set_cookie(request, response, chat, slug)
    return response


def _set_cookie(request: web.Request, response: web.Response, chat: Webchat, slug: str) -> None:
    """Strict, HttpOnly, for this tenant's chat paths only. Inside a business's own site
    (the widget's frame, `?embed=1`) a strict cookie is never sent: there, over HTTPS
    only, it is SameSite=None and Partitioned (kept apart per embedding site)."""
    value = webchat_cookie.sign(chat.secret, slug, webchat_cookie.new_session())
    secure = _secure(request)
    embedded = request.query.get("embed") == "1" and secure
    response.set_cookie(
        webchat_cookie.COOKIE,
        value,
        path=f"/chat/{slug}",
        max_age=webchat_cookie.MAX_AGE,
        httponly=True,
        secure=secure,
        samesite="None" if embedded else "Strict",
        partitioned=True if embedded else None,
    )


async def chat_post(request: web.Request) -> web.Response:
    chat = _webchat(request)
    if isinstance(chat, web.Response):
        return chat
    slug = request.match_info["tenant"]
    tenant = _tenant(request, slug)
    if isinstance(tenant, web.Response):
        return tenant
    session = _session(request, chat, slug)
    if isinstance(session, web.Response):
        return session
    # JSON only: a cross-site form cannot send it without a CORS preflight, which this
    # server never grants (with the strict cookie, a second wall against forged posts).
    if request.content_type != "application/json":
        return json_error(415, "expected application/json")
    raw = parse_json(await request.read())
    if not isinstance(raw, dict):
        return json_error(422, "invalid body", detail="expected a JSON object")
    post = validation_error(WebchatPost, raw)
    if isinstance(post, web.Response):
        return post
    limit = request.app[SETTINGS].webchat_max_text
    if len(post.text) > limit:
        metrics.WEBHOOKS_REJECTED.labels("webchat", "too_large").inc()
        return json_error(413, "message too long", detail=f"at most {limit} characters")
    if not post.text.strip():
        return json_error(422, "invalid body", detail=[{"field": "text", "problem": "empty"}])
    conversation = _conversation(tenant.slug, session)
    await _echo(chat, conversation, post)
    message = InboundMessage(
        message_id=f"{session}.{post.id}", conversation=conversation, text=post.text
    )
    response = await request.app[INGEST].accept(message)
    if response.status != 200:
        return response
    return web.json_response({"status": "queued", "id": post.id})


async def _echo(chat: Webchat, conversation: Conversation, post: WebchatPost) -> None:
    try:
        async with asyncio.timeout(chat.echo_timeout):
            await chat.log.append(conversation, "in", post.text, message_id=post.id)
    except Exception as exc:  # the message is still queued; only a reload misses it
        log.warning("webchat_echo_failed", error=type(exc).__name__)


def _entry_message(entry: ChatEntry) -> SseMessage:
    data = {
        "id": entry.id,
        "direction": entry.direction,
        "text": entry.text,
        "at": entry.at,
        "message_id": entry.message_id,
    }
    return SseMessage(entry.id, "message", orjson.dumps(data))


async def _entries(
    log_: ChatLog, conversation: Conversation, after: str | None
) -> AsyncIterator[SseMessage]:
    entries = log_.read(conversation, after)
    try:
        async for entry in entries:
            yield _entry_message(entry)
    finally:
        await entries.aclose()  # type: ignore[attr-defined]


async def chat_events(request: web.Request) -> web.StreamResponse:
    chat = _webchat(request)
    if isinstance(chat, web.Response):
        return chat
    slug = request.match_info["tenant"]
    tenant = _tenant(request, slug)
    if isinstance(tenant, web.Response):
        return tenant
    session = _session(request, chat, slug)
    if isinstance(session, web.Response):
        return session
    after = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    if after and not is_event_id(after):
        return json_error(400, "invalid Last-Event-ID")
    conversation = _conversation(tenant.slug, session)
    with chat.slots.hold(conversation.key) as admitted:
        if not admitted:
            return too_many_streams()
        return await stream_events(
            request,
            _entries(chat.log, conversation, after or None),
            keepalive=request.app[SETTINGS].events_keepalive.total_seconds(),
            closing=request.app[CLOSING],
        )


def _asset_response(request: web.Request, asset: Asset) -> web.Response:
    headers = {
        "ETag": asset.etag,
        "Cache-Control": "public, max-age=300",
        "X-Content-Type-Options": "nosniff",
    }
    if request.headers.get("If-None-Match") == asset.etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, content_type=asset.content_type, headers=headers)


async def chat_asset(request: web.Request) -> web.Response:
    chat = _webchat(request)
    if isinstance(chat, web.Response):
        return chat
    asset = chat.assets.get(request.match_info["name"])
    if asset is None:
        return json_error(404, "not found")
    return _asset_response(request, asset)


async def widget_js(request: web.Request) -> web.Response:
    """The snippet a business puts on its own site:
    `<script src="https://orderbot.example/chat/widget.js" data-tenant="slug"></script>`."""
    chat = _webchat(request)
    if isinstance(chat, web.Response):
        return chat
    response = _asset_response(request, chat.assets["widget.js"])
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response
