"""A stand-in for Chat2Desk's send API that records what it is sent.

It runs in the test's event loop on a loopback port. Tests tell it how to answer
(a status sequence, or hold requests until released) and wait on what it received
through conditions, never by sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class SentMessage:
    client_id: str
    text: str
    body: dict[str, Any]
    headers: dict[str, str]
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
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

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
        status = self.statuses.pop(0) if self.statuses else self.default_status
        async with self._changed:
            if status < 300:
                self.received.append(message)
            self._changed.notify_all()
        headers = {"Retry-After": self.retry_after} if self.retry_after and status == 429 else None
        if status >= 300:
            error: dict[str, Any] = {"status": "error", "message": "fake failure"}
            if self.echo_headers_on_error:  # as some APIs do in their debug output
                error["request_headers"] = message.headers
            return web.json_response(error, status=status, headers=headers)
        return web.json_response({"status": "success", "data": {"message_id": len(self.received)}})


@asynccontextmanager
async def running_fake() -> AsyncIterator[FakeChat2Desk]:
    fake = FakeChat2Desk()
    app = web.Application()
    app.router.add_post("/v1/messages", fake._handle)
    app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", fake._handle)
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
