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

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from orderbot.history.models import MessageStatus
from orderbot.runtime import metrics
from server.errors import json_error
from server.ingest import validation_error
from server.receipts import record_delivery
from server.twilio import ACCOUNT_SID, MESSAGE_SID, PRINTABLE, signed_form

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
    signed = await signed_form(request, "From", _rejected)
    if isinstance(signed, web.Response):
        return signed
    form, tenant, account_sid = signed
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
