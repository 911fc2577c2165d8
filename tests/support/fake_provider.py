"""A stand-in for Chat2Desk's and Twilio's APIs that records what it is sent.

It runs in the test's event loop on a loopback port. Tests tell it how to answer
(a status sequence, or hold requests until released) and wait on what it received
through conditions, never by sleeping.

Like the real services it keeps every message of the account in a list, whether or
not its webhook reached us: a customer's message (`customer_writes_*`) and each reply
sent through it. The lists answer in the providers' shapes: Chat2Desk's
`GET /v1/messages` (`type`, `order`, `limit` at most 200, `offset`, `start_id` as an
inclusive lower bound on the id; `{"data": [...], "meta": {...}, "status": "success"}`)
and `GET|POST /v1/webhooks`, `PUT /v1/webhooks/{id}`; a send answers with the new item's
id as `data.message_id`, the id its `outbox` hook will carry. `GET
/v1/messages/{id}/transfer_to_group?group_id=…` (Chat2Desk's transfer of the message's
dialog to an operator group) is recorded and answered `{"status": "success"}` (or, told
to fail, an error status); the fake keeps no dialogs, so it moves nothing. `POST
/handoff-notify` stands for an operators' HANDOFF_NOTIFY_URL receiver. Twilio's
`GET …/Messages.json` (`To`, `DateSent>` read as a day in UTC, `PageSize`, newest first,
`next_page_uri`); a Twilio send answers 201 with the new Message resource (`sid`, status
`queued`), as Twilio does.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from tests.support.credentials import TWILIO_NUMBER, TWILIO_SID

CHAT2DESK_LIST_LIMIT = 200


@dataclass
class SentMessage:
    client_id: str
    text: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float  # event-loop time of arrival


@dataclass(frozen=True)
class TransferCall:
    message_id: str
    group_id: str | None
    authorization: str | None


@dataclass(frozen=True)
class ListCall:
    provider: str
    query: dict[str, str]
    status: int
    at: float  # event-loop time of arrival


@dataclass
class FakeChat2Desk:
    url: str = ""
    received: list[SentMessage] = field(default_factory=list)
    attempts: list[SentMessage] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    default_status: int = 200
    retry_after: str | None = None
    hold: asyncio.Event | None = None
    echo_headers_on_error: bool = False
    latency: float = 0.0  # seconds a send takes to be answered: a slow provider
    # The accounts' message lists, oldest first, as the providers keep them.
    chat2desk_messages: list[dict[str, Any]] = field(default_factory=list)
    twilio_messages: list[dict[str, Any]] = field(default_factory=list)
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    # Every call to a list endpoint (path and query), and to the webhooks API.
    list_calls: list[ListCall] = field(default_factory=list)
    webhook_calls: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)
    list_statuses: dict[str, list[int]] = field(default_factory=dict)
    transfers: list[TransferCall] = field(default_factory=list)
    transfer_statuses: list[int] = field(default_factory=list)
    handoff_notes: list[dict[str, Any]] = field(default_factory=list)
    list_retry_after: str | None = None
    _ids: Any = field(default_factory=lambda: itertools.count(10**6))
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    # --- the accounts' lists ----------------------------------------------------------------

    def customer_writes_chat2desk(
        self,
        client_id: str,
        text: str,
        *,
        channel_id: int = 4242,
        dialog_id: int = 77,
        ago: timedelta = timedelta(0),
    ) -> dict[str, Any]:
        """A customer's message arrives at Chat2Desk (`ago` this long ago): it is in the
        list whatever becomes of its webhook. The item's `id` is the webhook's `message_id`."""
        item = self._chat2desk_item(int(client_id), text, "from_client", channel_id, dialog_id)
        item["created"] = (datetime.now(UTC) - ago).strftime("%Y-%m-%dT%H:%M:%S UTC")
        self.chat2desk_messages.append(item)
        return item

    def customer_writes_twilio(
        self, number: str, text: str, *, to: str = TWILIO_NUMBER, ago: timedelta = timedelta(0)
    ) -> dict[str, Any]:
        item = _twilio_item(sender=number, to=to, body=text, direction="inbound")
        sent = format_datetime(datetime.now(UTC).replace(microsecond=0) - ago)
        item.update(date_created=sent, date_sent=sent, date_updated=sent)
        self.twilio_messages.append(item)
        return item

    def bot_wrote_chat2desk(self, client_id: str, text: str) -> dict[str, Any]:
        """A message of ours (`to_client`) in the list, as a reply sent through the API is."""
        item = self._chat2desk_item(int(client_id), text, "to_client", 4242, None)
        self.chat2desk_messages.append(item)
        return item

    def bot_wrote_twilio(
        self, number: str, text: str, *, sender: str = TWILIO_NUMBER
    ) -> dict[str, Any]:
        item = _twilio_item(sender=sender, to=number, body=text, direction="outbound-api")
        self.twilio_messages.append(item)
        return item

    def fail_lists(self, provider: str, *statuses: int, retry_after: str | None = None) -> None:
        """Answer the next calls to `provider`'s message list with these statuses."""
        self.list_statuses.setdefault(provider, []).extend(statuses)
        self.list_retry_after = retry_after

    def calls_to(self, provider: str) -> list[ListCall]:
        return [call for call in self.list_calls if call.provider == provider]

    def add_webhook(
        self, url: str, *, status: str = "enable", errors: list[dict[str, str]] | None = None
    ) -> dict[str, Any]:
        hook = {
            "id": next(self._ids),
            "name": "orderbot",
            "url": url,
            "events": ["inbox"],
            "status": status,
            "errors": errors or [],
        }
        self.webhooks.append(hook)
        return hook

    def _chat2desk_item(
        self, client_id: int, text: str, type_: str, channel_id: int | None, dialog_id: int | None
    ) -> dict[str, Any]:
        return {
            "id": next(self._ids),
            "type": type_,
            "client_id": client_id,
            "text": text,
            "transport": "whatsapp",
            "channel_id": channel_id,
            "dialog_id": dialog_id,
            "operator_id": None,
            "read": 0,
            "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S UTC"),
        }

    async def _list_chat2desk(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        refused = self._list_refusal("chat2desk", query)
        if refused is not None:
            return refused
        items = self.chat2desk_messages
        if "type" in query:
            items = [m for m in items if m["type"] == query["type"]]
        if "start_id" in query:
            items = [m for m in items if m["id"] >= int(query["start_id"])]
        items = sorted(items, key=lambda m: m["id"], reverse=query.get("order", "desc") == "desc")
        limit = min(int(query.get("limit", "20")), CHAT2DESK_LIST_LIMIT)
        offset = int(query.get("offset", "0"))
        meta = {"total": len(items), "limit": limit, "offset": offset}
        page = items[offset : offset + limit]
        return web.json_response({"data": page, "meta": meta, "status": "success"})

    async def _list_twilio(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        refused = self._list_refusal("twilio", query)
        if refused is not None:
            return refused
        items = [m for m in self.twilio_messages if m["account_sid"] == request.match_info["sid"]]
        if "To" in query:
            items = [m for m in items if m["to"] == query["To"]]
        if "DateSent>" in query:  # `DateSent>=YYYY-MM-DD`: on or after that day, in UTC
            day = date.fromisoformat(query["DateSent>"][:10])
            items = [m for m in items if _sent(m).date() >= day]
        items.sort(key=lambda m: (_sent(m), m["sid"]), reverse=True)
        size = min(int(query.get("PageSize", "50")), 1000)
        token = query.get("PageToken")
        if token is not None:
            after = [i for i, m in enumerate(items) if m["sid"] == token.removeprefix("PA")]
            items = items[after[0] + 1 :] if after else []
        page, rest = items[:size], items[size:]
        number = int(query.get("Page", "0"))
        next_uri = None
        if rest:
            following = {**query, "Page": str(number + 1), "PageToken": f"PA{page[-1]['sid']}"}
            next_uri = f"{request.path}?{urlencode(following)}"
        return web.json_response(
            {
                "messages": page,
                "next_page_uri": next_uri,
                "page": number,
                "page_size": size,
                "start": 0,
                "end": len(page),
                "uri": request.path_qs,
            }
        )

    def _list_refusal(self, provider: str, query: dict[str, str]) -> web.Response | None:
        waiting = self.list_statuses.get(provider)
        status = waiting.pop(0) if waiting else 200
        loop_time = asyncio.get_running_loop().time()
        self.list_calls.append(ListCall(provider, query, status, loop_time))
        if status < 300:
            return None
        headers = {"Retry-After": self.list_retry_after} if self.list_retry_after else None
        return web.json_response(
            {"status": "error", "message": "fake failure"}, status=status, headers=headers
        )

    async def _get_webhooks(self, request: web.Request) -> web.Response:
        self.webhook_calls.append(("GET", request.path, None))
        return web.json_response({"data": self.webhooks, "status": "success"})

    async def _put_webhook(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.webhook_calls.append(("PUT", request.path, body))
        wanted = int(request.match_info["id"])
        for hook in self.webhooks:
            if hook["id"] == wanted:
                hook.update({k: body[k] for k in ("name", "url", "events", "status") if k in body})
                return web.json_response({"data": hook, "status": "success"})
        return web.json_response({"status": "error", "message": "not found"}, status=404)

    async def _post_webhook(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.webhook_calls.append(("POST", request.path, body))
        hook = self.add_webhook(body["url"])
        hook.update({"name": body.get("name"), "events": body.get("events", [])})
        return web.json_response({"data": hook, "status": "success"})

    async def _transfer_to_group(self, request: web.Request) -> web.Response:
        call = TransferCall(
            message_id=request.match_info["id"],
            group_id=request.query.get("group_id"),
            authorization=request.headers.get("Authorization"),
        )
        async with self._changed:
            self.transfers.append(call)
            self._changed.notify_all()
        status = self.transfer_statuses.pop(0) if self.transfer_statuses else 200
        if status >= 300:
            return web.json_response({"status": "error", "message": "fake failure"}, status=status)
        return web.json_response({"status": "success"})

    async def _handoff_note(self, request: web.Request) -> web.Response:
        note = await request.json()
        async with self._changed:
            self.handoff_notes.append(note)
            self._changed.notify_all()
        return web.json_response({"status": "ok"})

    def fail_next(self, *statuses: int) -> None:
        """Answer the next requests with these statuses, then succeed again."""
        self.statuses.extend(statuses)

    def fail_always(self, status: int = 500) -> None:
        self.default_status = status

    def recover(self) -> None:
        self.statuses.clear()
        self.default_status = 200

    def hold_requests(self) -> asyncio.Event:
        """Keep every request open until the returned event is set."""
        self.hold = asyncio.Event()
        return self.hold

    def texts_for(self, client_id: str) -> list[str]:
        return [m.text for m in self.received if m.client_id == client_id]

    async def wait_for(self, predicate: Any, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    async def wait_received(self, count: int, timeout: float = 30) -> None:
        await self.wait_for(lambda: len(self.received) >= count, timeout)

    async def wait_attempts(self, count: int, timeout: float = 30) -> None:
        await self.wait_for(lambda: len(self.attempts) >= count, timeout)

    async def _handle(self, request: web.Request) -> web.Response:
        """Chat2Desk's POST /v1/messages (JSON) and Twilio's Messages.json (form)."""
        if request.content_type == "application/x-www-form-urlencoded":
            form = await request.post()
            body: dict[str, Any] = {k: str(v) for k, v in form.items()}
            body["account"] = request.match_info.get("sid")
            client_id, text = body.get("To"), body.get("Body")
        else:
            body = await request.json()
            client_id, text = body.get("client_id"), body.get("text")
        twilio = request.content_type == "application/x-www-form-urlencoded"
        message = SentMessage(
            client_id=str(client_id),
            text=str(text),
            body=body,
            headers=dict(request.headers),
            at=asyncio.get_running_loop().time(),
        )
        async with self._changed:
            self.attempts.append(message)
            self._changed.notify_all()
        if self.hold is not None:
            await self.hold.wait()
        if self.latency:
            await asyncio.sleep(self.latency)
        status = self.statuses.pop(0) if self.statuses else self.default_status
        listed: dict[str, Any] | None = None
        async with self._changed:
            if status < 300:
                self.received.append(message)
                listed = self._listed(message, twilio=twilio)
            self._changed.notify_all()
        headers = {"Retry-After": self.retry_after} if self.retry_after and status == 429 else None
        if status >= 300:
            error: dict[str, Any] = {"status": "error", "message": "fake failure"}
            if self.echo_headers_on_error:  # as some APIs do in their debug output
                error["request_headers"] = message.headers
            return web.json_response(error, status=status, headers=headers)
        if twilio and listed is not None:
            # Twilio answers a create with the new Message resource, status queued.
            return web.json_response({**listed, "status": "queued"}, status=201)
        sent_id = listed["id"] if listed is not None and "id" in listed else len(self.received)
        return web.json_response({"status": "success", "data": {"message_id": sent_id}})

    def sent_ids_for(self, client_id: str) -> list[int]:
        """The ids Chat2Desk gave our sends to this client, oldest first."""
        return [
            m["id"]
            for m in self.chat2desk_messages
            if m["type"] == "to_client" and str(m["client_id"]) == client_id
        ]

    def _listed(self, message: SentMessage, *, twilio: bool) -> dict[str, Any] | None:
        """A reply sent through the API joins the account's list, as it does for real."""
        if twilio:
            sender = str(message.body.get("From"))
            item = _twilio_item(
                sender=sender, to=message.client_id, body=message.text, direction="outbound-api"
            )
            item["account_sid"] = message.body.get("account") or TWILIO_SID
            self.twilio_messages.append(item)
            return item
        if message.client_id.isdigit():
            channel = message.body.get("channel_id")
            item = self._chat2desk_item(
                int(message.client_id), message.text, "to_client", channel, None
            )
            self.chat2desk_messages.append(item)
            return item
        return None


def _twilio_item(*, sender: str, to: str, body: str, direction: str) -> dict[str, Any]:
    sid = f"SM{uuid.uuid4().hex}"
    now = format_datetime(datetime.now(UTC).replace(microsecond=0))
    return {
        "sid": sid,
        "account_sid": TWILIO_SID,
        "from": sender,
        "to": to,
        "body": body,
        "direction": direction,
        "status": "received" if direction == "inbound" else "sent",
        "num_media": "0",
        "num_segments": "1",
        "date_created": now,
        "date_sent": now,
        "date_updated": now,
        "api_version": "2010-04-01",
        "uri": f"/2010-04-01/Accounts/{TWILIO_SID}/Messages/{sid}.json",
    }


def _sent(item: dict[str, Any]) -> datetime:
    return parsedate_to_datetime(item["date_sent"])


@asynccontextmanager
async def running_fake() -> AsyncIterator[FakeChat2Desk]:
    fake = FakeChat2Desk()
    app = web.Application()
    app.router.add_post("/v1/messages", fake._handle)
    app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", fake._handle)
    app.router.add_get("/v1/messages", fake._list_chat2desk)
    app.router.add_get("/2010-04-01/Accounts/{sid}/Messages.json", fake._list_twilio)
    app.router.add_get("/v1/webhooks", fake._get_webhooks)
    app.router.add_post("/v1/webhooks", fake._post_webhook)
    app.router.add_put("/v1/webhooks/{id}", fake._put_webhook)
    app.router.add_get("/v1/messages/{id}/transfer_to_group", fake._transfer_to_group)
    app.router.add_post("/handoff-notify", fake._handoff_note)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        if fake.hold is not None:
            fake.hold.set()
        await runner.cleanup()
