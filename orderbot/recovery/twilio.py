"""Twilio's list of an account's messages, as the source of truth for WhatsApp through it.

`GET /2010-04-01/Accounts/{AccountSid}/Messages.json?To=…&DateSent>=YYYY-MM-DD&PageSize=…`
returns the newest first and the next page's path in `next_page_uri`. `DateSent>=` takes
a day in UTC, not a moment: the reconciler filters the times itself (recovery/pages.py).
Inbound messages have `direction: "inbound"`; ours are `outbound-api` or `outbound-reply`.
"""

from __future__ import annotations

from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from orderbot.config.secret_forms import basic_auth_forms, expand
from orderbot.envelopes import Conversation, InboundMessage
from orderbot.recovery.calls import call_json
from orderbot.recovery.ids import Text
from orderbot.recovery.pages import TwilioItem

PROVIDER = "twilio"
_MESSAGE_SID = r"^(SM|MM)[0-9a-f]{32}$"


class ListedMessage(BaseModel):
    """An item of the Messages list, with the webhook's rules for the fields we use."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    sid: str = Field(pattern=_MESSAGE_SID)
    direction: str
    sender: str = Field(alias="from", min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")
    to: str = ""
    body: Text | None = None
    date_sent: str | None = None

    @property
    def sent_at(self) -> datetime | None:
        return parsedate_to_datetime(self.date_sent) if self.date_sent else None

    def item(self) -> TwilioItem:
        return TwilioItem(sid=self.sid, direction=self.direction, date_sent=self.sent_at)

    def inbound(self, tenant: str) -> InboundMessage:
        """What server/twilio.py queues for the same message's webhook."""
        sent = self.sent_at
        message = InboundMessage(
            message_id=self.sid,
            conversation=Conversation(
                tenant=tenant, provider="twilio", client_id=self.sender, transport="whatsapp"
            ),
            text=self.body or "",
        )
        return message.model_copy(update={"received_at": sent}) if sent else message


class TwilioLists:
    def __init__(
        self, session: aiohttp.ClientSession, api_url: str, account_sid: str, auth_token: str
    ) -> None:
        self._session = session
        self._base = api_url.rstrip("/")
        self._path = f"/2010-04-01/Accounts/{account_sid}/Messages.json"
        self._headers = {"Authorization": aiohttp.encode_basic_auth(account_sid, auth_token)}
        self._secret_forms = expand([auth_token, *basic_auth_forms(account_sid, auth_token)])

    def first_page(self, to: str, since: datetime, page_size: int) -> str:
        query = quote(to, safe="")
        day = since.strftime("%Y-%m-%d")
        return f"{self._path}?To={query}&DateSent%3E={day}&PageSize={page_size}"

    async def page(self, uri: str) -> tuple[list[dict[str, Any]], str | None]:
        """The messages of the page at `uri` (a path, as next_page_uri gives it) and the
        path of the next one."""
        body = await call_json(
            self._session,
            "GET",
            self._base + uri,
            provider=PROVIDER,
            what="the list",
            headers=self._headers,
            secret_forms=self._secret_forms,
        )
        if not isinstance(body, dict):
            return [], None
        messages = body.get("messages")
        next_uri = body.get("next_page_uri")
        items = [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
        return items, next_uri if isinstance(next_uri, str) and next_uri else None
