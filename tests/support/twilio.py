"""A WhatsApp customer as Twilio posts them, signed by Twilio's own RequestValidator."""

from __future__ import annotations

import itertools
import uuid
from typing import Any
from urllib.parse import urlencode

from aiohttp.test_utils import TestClient
from twilio.request_validator import RequestValidator

from tests.support.credentials import PUBLIC_BASE_URL, TWILIO_NUMBER, TWILIO_SID, TWILIO_TOKEN

Client = TestClient[Any, Any]
URL = f"{PUBLIC_BASE_URL}/webhook/twilio"
STATUS_URL = f"{PUBLIC_BASE_URL}/webhook/twilio/status"
_sids = itertools.count(1)


class WhatsAppCustomer:
    def __init__(self) -> None:
        self.number = f"whatsapp:+996{uuid.uuid4().int % 10**9:09d}"

    def says(self, text: str) -> dict[str, str]:
        return {
            "MessageSid": f"SM{uuid.uuid4().hex}",
            "AccountSid": TWILIO_SID,
            "From": self.number,
            "To": TWILIO_NUMBER,
            "Body": text,
            "NumMedia": "0",
            "ProfileName": "Aida",
            "WaId": self.number.removeprefix("whatsapp:+"),
        }


def signed(form: dict[str, str], url: str = URL, token: str = TWILIO_TOKEN) -> dict[str, str]:
    """Headers as Twilio would send them, signed by the reference implementation."""
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": RequestValidator(token).compute_signature(url, form),
    }


async def post(client: Client, form: dict[str, str], **signing: str) -> Any:
    return await client.post(
        "/webhook/twilio", data=urlencode(form), headers=signed(form, **signing)
    )


def status_callback(
    sid: str, status: str, *, to: str, error_code: str | None = None
) -> dict[str, str]:
    """A message status callback as Twilio posts it for one of our sends."""
    form = {
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": status,
        "SmsStatus": status,
        "AccountSid": TWILIO_SID,
        "From": TWILIO_NUMBER,
        "To": to,
        "ApiVersion": "2010-04-01",
        "ChannelPrefix": "whatsapp",
    }
    if error_code is not None:
        form["ErrorCode"] = error_code
    return form


async def post_status(client: Client, form: dict[str, str], **signing: str) -> Any:
    return await client.post(
        "/webhook/twilio/status",
        data=urlencode(form),
        headers=signed(form, **{"url": STATUS_URL, **signing}),
    )
