"""Helpers of the reconciler's tests: its settings, its cursors in Redis, and waiting for
its passes by what the fake providers were asked."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from redis.asyncio import Redis

from orderbot.config.settings import Settings
from tests.support.fake_provider import FakeChat2Desk

# A pass a second, no grace (a message is taken once its second is over), a lease a
# killed holder gives up within three seconds.
FAST = {"RECONCILE_INTERVAL": "1s", "RECONCILE_GRACE": "0s", "RECONCILE_LEASE_TTL": "3s"}


def fast_settings(make_settings: Callable[..., Settings], **overrides: Any) -> Settings:
    values: dict[str, Any] = {k.lower(): v for k, v in FAST.items()}
    values.update(overrides)
    return make_settings(**values)


async def cursor(redis: Redis, settings: Settings, provider: str) -> dict[str, Any] | None:
    raw = await redis.get(
        f"{settings.redis_key_prefix}reconcile:watermark:{settings.tenant}:{provider}"
    )
    return json.loads(raw) if raw else None


async def poll(check: Callable[[], Any], timeout: float = 30) -> None:
    """Until `check()` (sync or async) is true."""
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.02)


async def wait_cursors(redis: Redis, settings: Settings, timeout: float = 30) -> None:
    """Until both channels' cursors exist: the first pass is over."""

    async def both() -> bool:
        return all([await cursor(redis, settings, p) for p in ("chat2desk", "twilio")])

    await poll(both, timeout)


async def wait_cursors_past(
    redis: Redis,
    settings: Settings,
    chat2desk_items: list[dict[str, Any]],
    twilio_items: list[dict[str, Any]],
    timeout: float = 30,
) -> None:
    """Until the saved cursors lie beyond these listed messages: they were published."""
    last_id = max(item["id"] for item in chat2desk_items)
    last_sent = max(parsedate_to_datetime(item["date_sent"]) for item in twilio_items)

    async def past() -> bool:
        c2d = await cursor(redis, settings, "chat2desk")
        tw = await cursor(redis, settings, "twilio")
        return bool(
            c2d
            and tw
            and (c2d["last_id"] or 0) >= last_id
            and tw["next_uri"] is None
            and datetime.fromisoformat(tw["since"]) > last_sent
        )

    await poll(past, timeout)


async def wait_passes(fake: FakeChat2Desk, count: int, timeout: float = 30) -> None:
    """Until both lists were read `count` more times."""
    start = {p: len(fake.calls_to(p)) for p in ("chat2desk", "twilio")}
    await poll(lambda: all(len(fake.calls_to(p)) >= n + count for p, n in start.items()), timeout)
