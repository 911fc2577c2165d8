"""Twilio's inbound WhatsApp webhook: verify the signature, then queue the message.

Twilio posts a form and expects TwiML back; an empty <Response/> means "no
immediate reply" (the worker answers through the API).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated
from urllib.parse import parse_qsl

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orderbot.envelopes import MAX_ATTACHMENTS, Attachment, Conversation, InboundMessage, Location
from orderbot.runtime import metrics
from orderbot.tenancy.directory import Tenant
from server import twilio_signature
from server.errors import json_error
from server.ingest import validation_error
from server.keys import INGEST, SETTINGS, TENANTS
from server.tenancy import tenant_unavailable
from server.text_rules import DROP_CONTROLS

log = structlog.get_logger(__name__)

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
PRINTABLE = r"^[\x21-\x7e]+$"
# Twilio's inbound WhatsApp form has about 20 fields, 20 more with ten media; this
# leaves room for the fields it adds over the years.
MAX_FORM_FIELDS = 200
# Twilio's ids are a two-letter type and 32 hex digits. The signature concatenates each
# name with its value and no separator, so a signed form can be re-cut: drop
# `NumMedia=0` and append `NumMedia0` to `MessageSid`, and the signature still holds for
# what is now a new message id that passes dedupe. An id of exactly Twilio's shape
# cannot absorb a neighbour's name and value.
MESSAGE_SID = r"^(SM|MM)[0-9a-f]{32}$"
ACCOUNT_SID = r"^AC[0-9a-f]{32}$"
_SERVICE_SID = r"^MG[0-9a-f]{32}$"


class TwilioInbound(BaseModel):
    """The fields of Twilio's inbound message we use; Twilio sends many more."""

    model_config = ConfigDict(extra="ignore")

    MessageSid: str = Field(pattern=MESSAGE_SID)
    SmsSid: str | None = Field(default=None, pattern=MESSAGE_SID)
    AccountSid: str = Field(pattern=ACCOUNT_SID)
    MessagingServiceSid: str | None = Field(default=None, pattern=_SERVICE_SID)
    From: str = Field(min_length=1, max_length=64, pattern=PRINTABLE)
    To: str = Field(min_length=1, max_length=64, pattern=PRINTABLE)
    Body: Annotated[str, Field(max_length=20_000), DROP_CONTROLS] = ""
    NumMedia: int = Field(default=0, ge=0, le=100)
    ProfileName: str | None = Field(default=None, max_length=256)
    WaId: str | None = Field(default=None, max_length=64)
    # A WhatsApp location message: the pin, and the place's address and name if it has them.
    Latitude: float | None = Field(default=None, ge=-90, le=90, allow_inf_nan=False)
    Longitude: float | None = Field(default=None, ge=-180, le=180, allow_inf_nan=False)
    Address: str | None = Field(default=None, max_length=512)
    Label: str | None = Field(default=None, max_length=512)

    def location(self) -> Location | None:
        if self.Latitude is None or self.Longitude is None:
            return None
        label = self.Address or self.Label
        return Location(latitude=self.Latitude, longitude=self.Longitude, label=label or None)


class TwilioMedia(BaseModel):
    """One of the message's media, `MediaUrl{n}` and `MediaContentType{n}`."""

    url: str = Field(min_length=1, max_length=2048, pattern=r"^https://[\x21-\x7e]+$")
    content_type: str | None = Field(default=None, max_length=128, pattern=PRINTABLE)


def media(hook: TwilioInbound, fields: dict[str, str]) -> tuple[Attachment, ...]:
    """The links of the photos, voice notes and files, as many as `NumMedia` says. One
    that does not read as a link is left out: the message itself is still the customer's."""
    found = []
    for n in range(min(hook.NumMedia, MAX_ATTACHMENTS)):
        raw = {
            "url": fields.get(f"MediaUrl{n}"),
            "content_type": fields.get(f"MediaContentType{n}"),
        }
        try:
            item = TwilioMedia.model_validate(raw)
        except ValidationError:
            log.info("twilio_media_unreadable", index=n)
            continue
        found.append(Attachment(url=item.url, content_type=item.content_type))
    return tuple(found)


def _rejected(reason: str) -> None:
    metrics.WEBHOOKS_REJECTED.labels("twilio", reason).inc()


async def read_form(request: web.Request) -> list[tuple[str, str]] | web.Response:
    if request.content_type != "application/x-www-form-urlencoded":
        _rejected("invalid")
        return json_error(415, "expected application/x-www-form-urlencoded")
    raw = await request.read()
    if raw.count(b"&") >= MAX_FORM_FIELDS:
        # Counted before anything is parsed or decoded: this runs before the signature
        # check, and a megabyte of blank fields took a tenth of a second to parse.
        return json_error(413, "too many form fields")  # counted as too_large by the middleware
    try:
        return parse_qsl(
            raw.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        _rejected("malformed")
        return json_error(400, "malformed form")


def signed_url(request: web.Request, public_base_url: str) -> str:
    """The URL Twilio signed: always the configured public one. The request's own URL
    is built from its Host header, which a caller chooses, so it would let a request
    signed for some other URL of the same account verify here."""
    return public_base_url.rstrip("/") + request.rel_url.path_qs


async def signed_form(
    request: web.Request, number_field: str, rejected: Callable[[str], None]
) -> tuple[list[tuple[str, str]], Tenant, str] | web.Response:
    """The form of a Twilio request, its tenant (found by our number in `number_field`)
    and that tenant's account SID, once the signature is checked with that tenant's auth
    token: a tenant's token never vouches for another's number. Or the error answer."""
    settings = request.app[SETTINGS]
    directory = request.app[TENANTS]
    if not settings.public_base_url:
        # Only a table's tenants get here (the settings' Twilio channel needs it at
        # start). Ours to fix, and nothing can be verified until then: a 5xx.
        log.error("twilio_public_base_url_missing")
        rejected("misconfigured")
        return json_error(503, "signature cannot be checked", headers={"Retry-After": "60"})
    form = await read_form(request)
    if isinstance(form, web.Response):
        return form
    ours = next((value for name, value in form if name == number_field), None)
    tenant = directory.by_twilio_number(ours) if ours else None
    credentials = tenant.twilio_credentials() if tenant else None
    if tenant is None or credentials is None:
        if directory.unavailable(ours or ""):
            return tenant_unavailable("twilio")
        rejected("unknown_number")
        return json_error(404, "unknown number")
    account_sid, token, _ = credentials
    url = signed_url(request, settings.public_base_url)
    if not twilio_signature.is_valid(token, url, form, request.headers.get("X-Twilio-Signature")):
        rejected("bad_signature")
        return json_error(403, "invalid signature")
    return form, tenant, account_sid


async def twilio_webhook(request: web.Request) -> web.Response:
    """Route by `To` (each tenant has its own number), then check the signature."""
    signed = await signed_form(request, "To", _rejected)
    if isinstance(signed, web.Response):
        return signed
    form, tenant, account_sid = signed
    fields: dict[str, str] = {}
    for name, value in form:
        if name in TwilioInbound.model_fields and name in fields:
            _rejected("invalid")
            return json_error(422, "invalid body", detail=[{"field": name, "problem": "repeated"}])
        fields[name] = value
    hook = validation_error(TwilioInbound, fields)
    if isinstance(hook, web.Response):
        return hook
    if not hmac.compare_digest(hook.AccountSid.encode(), account_sid.encode()):
        _rejected("bad_signature")
        return json_error(403, "invalid account")
    if not tenant.active:
        _rejected("tenant_disabled")
        return json_error(403, "tenant disabled")
    message = InboundMessage(
        message_id=hook.MessageSid,
        conversation=Conversation(
            tenant=tenant.slug, provider="twilio", client_id=hook.From, transport="whatsapp"
        ),
        text=hook.Body,
        location=hook.location(),
        attachments=media(hook, fields),
    )
    response = await request.app[INGEST].accept(message)
    if response.status != 200:
        return response
    return web.Response(text=EMPTY_TWIML, content_type="text/xml")
