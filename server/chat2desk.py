"""Chat2Desk's inbound hook: validate, then queue the customer's message.

Chat2Desk calls one URL for every event of an account (client messages, operator
messages, dialog changes). A message from the client starts a dialog step. An operator's
message (`outbox` with an `operator_id`) and a closed dialog (`close_dialog`) are queued
as events of the customer's conversation, for the worker to hand the conversation to a
person or give it back (the edge keeps no state of its own). An `outbox_status` event (what
became of a reply) is written to the conversation history. Everything else is
acknowledged with 200 so Chat2Desk does not retry it, and so is an event too malformed
to read: refusing it would make Chat2Desk retry and in the end disable the webhook, which
would cost the customers' messages too.
"""

from __future__ import annotations

import functools
import hmac
import uuid
from typing import Annotated, Any, cast

import structlog
from aiohttp import web
from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from orderbot.envelopes import (
    MAX_ATTACHMENTS,
    Attachment,
    Conversation,
    ConversationEvent,
    Location,
)
from orderbot.history.models import MessageStatus
from orderbot.runtime import metrics
from orderbot.tenancy.directory import Tenant, webhook_token_hash
from server import chat2desk_signature
from server.envelope import inbound_body
from server.errors import json_error
from server.ingest import parse_json, validation_error
from server.keys import INGEST, SETTINGS, TENANTS
from server.receipts import record_delivery
from server.tenancy import tenant_unavailable
from server.text_rules import DROP_CONTROLS, NO_CONTROLS

log = structlog.get_logger(__name__)


def _id_to_str(value: object) -> object:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


# Ids travel as AMQP message ids (short strings of at most 255 bytes) and in Redis
# keys: printable ASCII keeps them valid and unambiguous everywhere. The constraints
# come before the BeforeValidator, so they are the string's own, checked inside
# pydantic-core; after it, each was a Python call per field of every hook.
_PRINTABLE = r"^[\x21-\x7e]+$"
Id = Annotated[
    StrictStr, Field(min_length=1, max_length=128, pattern=_PRINTABLE), BeforeValidator(_id_to_str)
]
# The constraints apply to the string, not to the union with None: on the union
# pydantic raises a TypeError for a null, which became a 500.
OptionalId = (
    Annotated[StrictStr, Field(max_length=128, pattern=_PRINTABLE), BeforeValidator(_id_to_str)]
    | None
)


class Chat2DeskEvent(BaseModel):
    """The part of any hook body that says what kind of event it is."""

    model_config = ConfigDict(extra="ignore")

    type: StrictStr | None = None
    hook_type: StrictStr | None = None

    @property
    def is_client_message(self) -> bool:
        if self.type is not None:
            return self.type == "from_client"
        return self.hook_type == "inbox"


class Chat2DeskInbound(BaseModel):
    """A message from the client. Unknown fields are Chat2Desk's business and ignored."""

    model_config = ConfigDict(extra="ignore")

    message_id: Id
    client_id: Id
    text: Annotated[StrictStr, Field(max_length=20_000), DROP_CONTROLS] | None = None
    transport: Annotated[StrictStr, Field(max_length=64), NO_CONTROLS] | None = None
    channel_id: OptionalId = None
    dialog_id: OptionalId = None


def _blank_is_absent(body: object) -> object:
    """Chat2Desk writes an empty field as `""` in places (`operator_id` of a message
    nobody sent by hand): read as absent, not as an id that fails its pattern."""
    if isinstance(body, dict):
        return {key: value for key, value in body.items() if value != ""}
    return body


class Chat2DeskOutbox(BaseModel):
    """A message to the client (`hook_type: outbox`): an operator's, or one of the bot's
    own sends coming back, which the worker tells apart by its `message_id`."""

    model_config = ConfigDict(extra="ignore")

    _blank = model_validator(mode="before")(_blank_is_absent)

    message_id: Id
    client_id: Id
    operator_id: OptionalId = None
    dialog_id: OptionalId = None
    transport: Annotated[StrictStr, Field(max_length=64), NO_CONTROLS] | None = None
    channel_id: OptionalId = None


class Chat2DeskDialogClosed(BaseModel):
    """`hook_type: close_dialog`: the dialog was closed (by an operator, or by Chat2Desk's
    own rules). Assumed to carry `client_id` like the message events; without one it
    cannot name a conversation and is acknowledged unread."""

    model_config = ConfigDict(extra="ignore")

    _blank = model_validator(mode="before")(_blank_is_absent)

    client_id: Id
    dialog_id: OptionalId = None
    operator_id: OptionalId = None
    transport: Annotated[StrictStr, Field(max_length=64), NO_CONTROLS] | None = None
    channel_id: OptionalId = None


class Chat2DeskClientHook(Chat2DeskInbound, Chat2DeskEvent):
    """Both at once: the common body (a valid client message) is validated once. Any
    failure falls back to the two models in turn, whose verdicts and errors stand."""


def _validate(
    body: dict[str, Any],
) -> tuple[Chat2DeskEvent, Chat2DeskInbound | None] | web.Response:
    """The event and, for a client message, the message; or the 422. One validation for
    the common body; the two models in turn (their errors, their order) otherwise."""
    try:
        both = Chat2DeskClientHook.model_validate(body)
    except ValidationError:
        pass
    else:
        return (both, both) if both.is_client_message else (both, None)
    event = validation_error(Chat2DeskEvent, body)
    if isinstance(event, web.Response):
        return event
    if not event.is_client_message:
        return event, None
    hook = validation_error(Chat2DeskInbound, body)
    if isinstance(hook, web.Response):
        return hook
    return event, hook


# A tenant's URL carries the same token on every hook: its SHA-256 is worked out once.
# Bounded, so tokens a stranger makes up only cycle through the cache.
_token_hash = functools.lru_cache(maxsize=1024)(webhook_token_hash)


def _refused(status: int, reason: str, error: str) -> web.Response:
    metrics.WEBHOOKS_REJECTED.labels("chat2desk", reason).inc()
    return json_error(status, error)


async def chat2desk_webhook(request: web.Request) -> web.Response:
    """`/webhook/chat2desk/{token}`: the token alone names the tenant."""
    directory = request.app[TENANTS]
    digest = _token_hash(request.match_info["token"])
    tenant = directory.by_webhook_token_hash(digest)
    if tenant is None:
        if directory.unavailable(digest):
            return tenant_unavailable("chat2desk")
        return _refused(403, "bad_token", "invalid webhook token")
    return await _serve(request, tenant)


async def chat2desk_tenant_webhook(request: web.Request) -> web.Response:
    """`/webhook/chat2desk/{tenant}/{token}`: the token must be this tenant's own, so a
    token leaked from one business never opens another's URL."""
    directory = request.app[TENANTS]
    tenant = directory.get(request.match_info["tenant"])
    if tenant is None:
        if directory.unavailable(request.match_info["tenant"]):
            return tenant_unavailable("chat2desk")
        return json_error(404, "unknown tenant")  # counted as not_found by the middleware
    expected = tenant.webhook_token_sha256
    given = _token_hash(request.match_info["token"])
    if expected is None or not hmac.compare_digest(given, expected):
        if directory.uncertain:  # perhaps a token rotated while we were not told
            return tenant_unavailable("chat2desk")
        return _refused(403, "bad_token", "invalid webhook token")
    return await _serve(request, tenant)


async def _serve(request: web.Request, tenant: Tenant) -> web.Response:
    if not tenant.active:
        # Told apart from a bad token only to whoever holds the right one.
        return _refused(403, "tenant_disabled", "tenant disabled")
    raw = await request.read()
    mode = tenant.chat2desk_webhook_signature or request.app[SETTINGS].chat2desk_webhook_signature
    if mode != "off" and not _signed(request, tenant, raw, required=mode == "require"):
        log.warning("webhook_bad_signature", tenant=tenant.slug)
        return _refused(403, "bad_signature", "invalid signature")
    body = parse_json(raw)
    if not isinstance(body, dict):
        metrics.WEBHOOKS_REJECTED.labels("chat2desk", "invalid").inc()
        return json_error(422, "invalid body", detail="expected a JSON object")
    verdict = _validate(body)
    if isinstance(verdict, web.Response):
        return verdict
    event, hook = verdict
    if hook is None and event.hook_type == "outbox_status":
        return await _delivery_status(request, tenant, body)
    if hook is None:
        queued = _conversation_event(tenant, event, body)
        if isinstance(queued, str):
            log.info(
                "event_ignored",
                tenant=tenant.slug,
                type=event.type,
                hook_type=event.hook_type,
                reason=queued,
            )
            metrics.WEBHOOKS_IGNORED.labels("chat2desk", queued).inc()
            return web.json_response({"status": "ignored"})
        return await request.app[INGEST].accept_event(queued)
    message = inbound_body(
        message_id=hook.message_id,
        tenant=tenant.slug,
        provider="chat2desk",
        client_id=hook.client_id,
        transport=hook.transport,
        channel_id=hook.channel_id,
        text=hook.text or "",
        dialog_id=hook.dialog_id,
        client_phone=client_phone(body),
        location=location(body),
        attachments=attachments(body),
    )
    return await request.app[INGEST].accept_body(message)


def _conversation_event(
    tenant: Tenant, event: Chat2DeskEvent, body: dict[str, Any]
) -> ConversationEvent | str:
    """The event to queue, or why there is none (the reason label of the ignored count)."""
    hook_type = event.hook_type or ("outbox" if event.type == "to_client" else None)
    try:
        if hook_type == "outbox":
            sent = Chat2DeskOutbox.model_validate(body)
            if sent.operator_id is None:
                return "not_operator_message"
            return ConversationEvent(
                event_id=f"outbox:{sent.message_id}",
                conversation=_conversation(tenant, sent),
                event="operator_message",
                message_id=sent.message_id,
                operator_id=sent.operator_id,
                dialog_id=sent.dialog_id,
            )
        if hook_type == "close_dialog":
            closed = Chat2DeskDialogClosed.model_validate(body)
            return ConversationEvent(
                event_id=f"close_dialog:{closed.dialog_id or '-'}:{uuid.uuid4().hex}",
                conversation=_conversation(tenant, closed),
                event="dialog_closed",
                operator_id=closed.operator_id,
                dialog_id=closed.dialog_id,
            )
    except ValidationError:
        log.warning("event_unreadable", tenant=tenant.slug, hook_type=hook_type)
        return "unreadable_event"
    return "not_client_message"


class Chat2DeskOutboxStatus(BaseModel):
    """`hook_type: outbox_status`: what became of a message sent to the client, as the
    messenger told Chat2Desk. Chat2Desk documents it for the errors messengers report; a
    `status` of delivered or read is taken as such, anything else (or none) with an error
    as not delivered."""

    model_config = ConfigDict(extra="ignore")

    _blank = model_validator(mode="before")(_blank_is_absent)

    message_id: Id
    status: Annotated[StrictStr, Field(max_length=64), NO_CONTROLS] | None = None
    error: Annotated[StrictStr, Field(max_length=500), DROP_CONTROLS] | None = None

    def history_status(self) -> MessageStatus | None:
        named = (self.status or "").lower()
        if named in ("delivered", "read", "sent"):
            return cast(MessageStatus, named)
        if self.error or named in ("error", "failed", "undelivered", "not_delivered"):
            return "undelivered"
        return None


async def _delivery_status(
    request: web.Request, tenant: Tenant, body: dict[str, Any]
) -> web.Response:
    """An outbox_status event, recorded against the reply Chat2Desk gave `message_id`."""
    try:
        event = Chat2DeskOutboxStatus.model_validate(body)
    except ValidationError:
        metrics.WEBHOOKS_IGNORED.labels("chat2desk", "unreadable_event").inc()
        return web.json_response({"status": "ignored"})
    status = event.history_status()
    if status is None:
        metrics.WEBHOOKS_IGNORED.labels("chat2desk", "unknown_status").inc()
        return web.json_response({"status": "ignored"})
    refused = await record_delivery(
        request,
        tenant=tenant.slug,
        provider="chat2desk",
        provider_message_id=event.message_id,
        status=status,
        error=event.error,
    )
    return refused or web.json_response({"status": "recorded"})


def _conversation(tenant: Tenant, hook: Chat2DeskOutbox | Chat2DeskDialogClosed) -> Conversation:
    return Conversation(
        tenant=tenant.slug,
        provider="chat2desk",
        client_id=hook.client_id,
        transport=hook.transport,
        channel_id=hook.channel_id,
    )


def client_phone(body: dict[str, Any]) -> str | None:
    """The client's phone from the hook's `client` object, if it has a plausible one.

    Read leniently and apart from the validated fields: it is a convenience (the phone
    question's one-tap answer), so a `client` object of any other shape must never cost
    the message a 422. `client_phone` is the one an operator entered; `phone` is the
    messenger's id, a number for WhatsApp but `[chat] …` for the web widget (which the
    dialog then does not offer).
    """
    client = body.get("client")
    if not isinstance(client, dict):
        return None
    for field in ("client_phone", "phone"):
        value = client.get(field)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and 0 < len(value) <= 32 and value.isprintable():
            return value
    return None


_URL = r"^https?://[\x21-\x7e]+$"
Url = Annotated[StrictStr, Field(max_length=2048, pattern=_URL)]


class _LatLon(BaseModel):
    """`coordinates` as an object: `latitude`/`longitude`, or the short `lat`/`lon`
    (`lng`) names."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    latitude: float = Field(validation_alias=AliasChoices("latitude", "lat"))
    longitude: float = Field(validation_alias=AliasChoices("longitude", "lon", "lng"))


class _Linked(BaseModel):
    """An item of `attachments`: its link, and its type when Chat2Desk names one."""

    model_config = ConfigDict(extra="ignore")

    link: Url = Field(validation_alias=AliasChoices("link", "url"))
    content_type: StrictStr | None = Field(
        default=None,
        max_length=128,
        validation_alias=AliasChoices("content_type", "mime_type", "type"),
    )


# Chat2Desk's own media fields: a link each (null when absent), and the kind it names.
_MEDIA_FIELDS = {"photo": "image", "audio": "audio", "video": "video", "pdf": "application/pdf"}


def location(body: dict[str, Any]) -> Location | None:
    """The pin of a WhatsApp or Telegram location message, from the hook's `coordinates`.

    Chat2Desk documents the field (null in a text message) but not its shape: read as
    `"lat,lon"`, `[lat, lon]` or an object of the two, and leniently like the client's
    phone: a shape that is none of these only means no pin, never a refused message.
    """
    raw = body.get("coordinates")
    if isinstance(raw, str):
        parts = raw.replace(";", ",").split(",") if "," in raw or ";" in raw else raw.split()
        raw = parts
    if isinstance(raw, list) and len(raw) == 2:
        raw = {"latitude": raw[0], "longitude": raw[1]}
    if not isinstance(raw, dict):
        return None
    try:
        point = _LatLon.model_validate(raw)
        return Location(latitude=point.latitude, longitude=point.longitude)
    except ValidationError:
        log.info("coordinates_unreadable")
        return None


def attachments(body: dict[str, Any]) -> tuple[Attachment, ...]:
    """The links of the photo, voice note, video or file a message carried: Chat2Desk's
    `photo`, `audio`, `video` and `pdf` fields and its `attachments` list. Read
    leniently: an item of another shape is left out, the message is still queued."""
    found: list[Attachment] = []
    for field, kind in _MEDIA_FIELDS.items():
        value = body.get(field)
        if isinstance(value, str) and _is_url(value):
            found.append(Attachment(url=value, content_type=kind))
    listed = body.get("attachments")
    for item in listed if isinstance(listed, list) else ():
        raw = {"link": item} if isinstance(item, str) else item
        try:
            linked = _Linked.model_validate(raw)
        except ValidationError:
            continue
        if all(a.url != linked.link for a in found):
            found.append(Attachment(url=linked.link, content_type=linked.content_type))
    return tuple(found[:MAX_ATTACHMENTS])


def _is_url(value: str) -> bool:
    try:
        _URL_ADAPTER.validate_python(value)
    except ValidationError:
        return False
    return True


_URL_ADAPTER: TypeAdapter[str] = TypeAdapter(Url)


def _signed(request: web.Request, tenant: Tenant, raw: bytes, *, required: bool) -> bool:
    """Whether the body carries a valid X-Signature; without one, whether that is allowed."""
    given = request.headers.get("X-Signature")
    if given is None and not required:
        return True
    token = tenant.chat2desk_api_token
    return chat2desk_signature.is_valid(
        token.get_secret_value() if token else "", raw, request.headers.get("X-Timestamp"), given
    )
