"""Chat2Desk's list APIs: the messages of an account and its webhooks.

`GET /v1/messages` (`type`, `order`, `limit` up to 200, `offset`, `start_id`) holds every
message of the account, the customers' (`from_client`) and ours (`to_client`); its items
carry `id`, the number a webhook sends as `message_id`. `GET /v1/webhooks` says whether
Chat2Desk still calls us: it disables a webhook that failed for hours, and then only the
list has the customers' messages. Bodies are `{"data": ..., "status": "success"}`.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orderbot.config.secret_forms import expand
from orderbot.envelopes import Conversation, InboundMessage
from orderbot.recovery.calls import call_json
from orderbot.recovery.ids import Id, OptionalId, Text, Transport
from orderbot.recovery.pages import Chat2DeskItem, parse_chat2desk_time

PROVIDER = "chat2desk"


class ListedMessage(BaseModel):
    """An item of GET /v1/messages, with the webhook's rules for the fields we use."""

    model_config = ConfigDict(extra="ignore")

    id: int
    type: str = "from_client"
    client_id: Id
    text: Text | None = None
    transport: Transport | None = None
    channel_id: OptionalId = None
    dialog_id: OptionalId = None
    created: str

    def item(self) -> Chat2DeskItem:
        return Chat2DeskItem(id=self.id, type=self.type, created=parse_chat2desk_time(self.created))

    def inbound(self, tenant: str) -> InboundMessage:
        """What server/chat2desk.py queues for the same message's webhook."""
        return InboundMessage(
            message_id=str(self.id),
            conversation=Conversation(
                tenant=tenant,
                provider="chat2desk",
                client_id=self.client_id,
                transport=self.transport,
                channel_id=self.channel_id,
            ),
            text=self.text or "",
            dialog_id=self.dialog_id,
            received_at=parse_chat2desk_time(self.created),
        )


class WebhookError(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: str = ""
    created_at: str | None = None


class Webhook(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: int
    name: str | None = None
    url: str
    events: list[str] = Field(default_factory=list)
    status: str = "enable"
    errors: list[WebhookError] = Field(default_factory=list)

    @property
    def disabled(self) -> bool:
        return self.status != "enable"


class Chat2DeskLists:
    def __init__(self, session: aiohttp.ClientSession, api_url: str, token: str) -> None:
        self._session = session
        self._base = api_url.rstrip("/")
        self._headers = {"Authorization": token, "Content-Type": "application/json"}
        self._secret_forms = expand([token])

    async def messages(
        self, *, order: str, limit: int, offset: int = 0, start_id: int | None = None
    ) -> list[dict[str, Any]]:
        params: dict[str, str | int] = {
            "type": "from_client",
            "order": order,
            "limit": limit,
            "offset": offset,
        }
        if start_id is not None:
            params["start_id"] = start_id
        data = await self._call("GET", "/v1/messages", params=params)
        return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []

    async def webhooks(self) -> list[Webhook]:
        data = await self._call("GET", "/v1/webhooks")
        found = data if isinstance(data, list) else []
        return [Webhook.model_validate(item) for item in found if isinstance(item, dict)]

    async def enable(self, webhook: Webhook) -> None:
        """PUT the webhook's own fields back with `status: enable`."""
        body = {"name": webhook.name, "url": webhook.url, "events": webhook.events}
        await self._call("PUT", f"/v1/webhooks/{webhook.id}", json={**body, "status": "enable"})

    async def register(self, url: str, events: list[str], name: str) -> Webhook | None:
        data = await self._call(
            "POST", "/v1/webhooks", json={"name": name, "url": url, "events": events}
        )
        try:
            return Webhook.model_validate(data) if isinstance(data, dict) else None
        except ValidationError:
            return None

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str | int] | None = None,
        json: dict[str, Any] | None = None,
    ) -> Any:
        body = await call_json(
            self._session,
            method,
            self._base + path,
            provider=PROVIDER,
            what=f"{method} {path}",
            headers=self._headers,
            secret_forms=self._secret_forms,
            params=params,
            data=orjson.dumps(json) if json is not None else None,
        )
        return body.get("data") if isinstance(body, dict) else None
