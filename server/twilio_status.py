"""Twilio's status callbacks of our replies: `POST /webhook/twilio/status`.

Every send passes StatusCallback (orderbot/delivery/twilio.py), so Twilio posts here each
change of the message's status: a form like the inbound hook's, signed the same way
(X-Twilio-Signature over PUBLIC_BASE_URL + path and the sorted fields). The callback is
routed by `From`, our own number, and checked with that tenant's auth token.

Twilio's statuses map onto the history's: accepted, queued, sending and sent all mean the
provider has it (`sent`); delivered and read are themselves; failed and undelivered after
Twilio took the message are `undelivered`, with ErrorCode as the reason.
"""

from __future__ import annotations

import hmac

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from orderbot.history.models import MessageStatus
from orderbot.runtime import metrics
from server import twilio_signature
from server.errors import json_error
from server.ingest import validation_error
from server.keys import SETTINGS, TENANTS
from server.receipts import record_delivery
from server.tenancy import tenant_unavailable
from server.twilio import ACCOUNT_SID, MESSAGE_SID, PRINTABLE, read_form, signed_url

log = structlog.get_logger(__name__)

_STATUSES: dict[str, MessageStatus] = {
    "accepted": "sent",
    "scheduled": "sent",
    "queued": "sent",
    "sending": "sent",
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "failed": "undelivered",
    "undelivered": "undelivered",
}


class TwilioStatusCallback(BaseModel):
    """The fields of Twilio's message status callback we use; it sends more."""

    model_config = ConfigDict(extra="ignore")

    MessageSid: str = Field(pattern=MESSAGE_SID)
    AccountSid: str = Field(pattern=ACCOUNT_SID)
    MessageStatus: str = Field(min_length=1, max_length=32, pattern=r"^[a-z_]+$")
    From: str = Field(min_length=1, max_length=64, pattern=PRINTABLE)
    To: str | None = Field(default=None, max_length=64, pattern=PRINTABLE)
    ErrorCode: str | None = Field(default=None, max_length=16, pattern=r"^[0-9]*$")


def _rejected(reason: str) -> None:
    metrics.WEBHOOKS_REJECTED.labels("twilio_status", reason).inc()


async def twilio_status_webhook(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    directory = request.app[TENANTS]
    if not settings.public_base_url:
        log.error("twilio_public_base_url_missing")
        _rejected("misconfigured")
        return json_error(503, "signature cannot be checked", headers={"Retry-After": "60"})
    form = await read_form(request)
    if isinstance(form, web.Response):
        return form
    ours = next((value for name, value in form if name == "From"), None)
    tenant = directory.by_twilio_number(ours) if ours else None
    credentials = tenant.twilio_credentials() if tenant else None
    if tenant is None or credentials is None:
        if directory.unavailable(ours or ""):
            return tenant_unavailable("twilio")
        _rejected("unknown_number")
        return json_error(404, "unknown number")
    account_sid, token, _ = credentials
    url = signed_url(request, settings.public_base_url)
    if not twilio_signature.is_valid(token, url, form, request.headers.get("X-Twilio-Signature")):
        _rejected("bad_signature")
        return json_error(403, "invalid signature")
    callback = validation_error(TwilioStatusCallback, dict(form))
    if isinstance(callback, web.Response):
        return callback
    if not hmac.compare_digest(callback.AccountSid.encode(), account_sid.encode()):
        _rejected("bad_signature")
        return json_error(403, "invalid account")
    status = _STATUSES.get(callback.MessageStatus)
    if status is None:  # a status Twilio added later: nothing we can say of it
        metrics.WEBHOOKS_IGNORED.labels("twilio", "unknown_status").inc()
        return web.Response(status=204)
    error = f"twilio error {callback.ErrorCode}" if callback.ErrorCode else None
    refused = await record_delivery(
        request,
        tenant=tenant.slug,
        provider="twilio",
        provider_message_id=callback.MessageSid,
        status=status,
        error=error,
    )
    return refused or web.Response(status=204)
