"""A Chat2Desk send API that can be told to fail, throttle or stall, and keeps the books
of what it delivered to whom.

Unlike tests/support/fake_provider.py it is built for load: deliveries are indexed by client,
and a stalled request is still delivered when its delay is over (as a real provider
would, although the caller gave up), so timeouts produce the duplicates they produce
in production. Those late deliveries are counted, because they explain duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web

Mode = Literal["ok", "fail", "throttle", "slow"]


@dataclass
class ChaosChat2Desk:
    url: str = ""
    mode: Mode = "ok"
    latency: float = 0.0  # every answer takes this long (models a provider's own speed)
    slow_delay: float = 1.0  # in "slow" mode: longer than the senders' SEND_TIMEOUT
    # In "slow" mode, when set: a stalled send is held until this is set instead, so a
    # test decides when the send its sender gave up on reaches the customer.
    stalled_until: asyncio.Event | None = None
    # When set: every answer, once counted in `requests`, waits until this is set, so a
    # test decides what happens while a send is on its way.
    held_until: asyncio.Event | None = None
    retry_after: str = "1"  # in "throttle" mode
    requests: int = 0  # every send call that reached the provider
    delivered: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    # For each delivered text, in the same order: (time.monotonic(), delivered late?)
    delivery_log: dict[str, list[tuple[float, bool]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    deliveries: int = 0
    late_deliveries: int = 0  # delivered after the caller had hung up (it will retry)
    refusals: Counter[int] = field(default_factory=Counter)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode

    def texts_for(self, client_id: str) -> list[str]:
        return list(self.delivered.get(client_id, ()))

    def log_for(self, client_id: str) -> list[tuple[float, bool]]:
        return list(self.delivery_log.get(client_id, ()))

    def count_for(self, client_id: str) -> int:
        return len(self.delivered.get(client_id, ()))

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        mode = self.mode
        async with self._changed:
            self.requests += 1
            self._changed.notify_all()
        if self.held_until is not None:
            await self.held_until.wait()
        if self.latency:
            await asyncio.sleep(self.latency)
        if mode == "fail":
            return await self._refuse(500)
        if mode == "throttle":
            return await self._refuse(429, {"Retry-After": self.retry_after})
        if mode == "slow" and self.stalled_until is not None:
            await self.stalled_until.wait()
        elif mode == "slow":
            await asyncio.sleep(self.slow_delay)
        async with self._changed:
            client = str(body.get("client_id"))
            # A slow answer comes after the sender's SEND_TIMEOUT by construction, so the
            # sender has given up on it whether or not its close has reached us yet.
            late = mode == "slow" or request.transport is None or request.transport.is_closing()
            self.delivered[client].append(str(body.get("text")))
            self.delivery_log[client].append((time.monotonic(), late))
            self.deliveries += 1
            self.late_deliveries += late
            self._changed.notify_all()
        return web.json_response({"status": "success", "data": {"message_id": self.deliveries}})

    async def _refuse(self, status: int, headers: dict[str, str] | None = None) -> web.Response:
        async with self._changed:
            self.refusals[status] += 1
            self._changed.notify_all()
        return web.json_response({"status": "error"}, status=status, headers=headers)


@contextlib.asynccontextmanager
async def running_chaos_provider() -> AsyncIterator[ChaosChat2Desk]:
    provider = ChaosChat2Desk()
    app = web.Application()
    app.router.add_post("/v1/messages", provider._handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    provider.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield provider
    finally:
        await runner.cleanup()
