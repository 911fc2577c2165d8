"""Server-Sent Events: one response per browser, held open, with keep-alives, a cap of
open streams per tenant, and an end when the server shuts down.

A stream is read by a task of its own into a small queue, so that the response can
wake for a keep-alive or the server's shutdown while the bus waits for news. At
shutdown every stream ends at once (the browser reconnects elsewhere, or here after
the restart, with Last-Event-ID): an open stream never holds SIGTERM up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from server.errors import json_error

log = structlog.get_logger(__name__)

# How long a browser waits before it reconnects after the stream ends.
RETRY_MS = 2000


@dataclass(frozen=True, slots=True)
class SseMessage:
    id: str | None
    event: str
    data: bytes  # one line: JSON without newlines


class StreamSlots:
    """Open streams per tenant in this process, at most `limit` each: a stranger with a
    valid key (or a customer's many tabs) cannot hold every connection."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._open: Counter[str] = Counter()

    def count(self, tenant: str) -> int:
        return self._open[tenant]

    @contextlib.contextmanager
    def hold(self, tenant: str) -> Iterator[bool]:
        if self._open[tenant] >= self._limit:
            yield False
            return
        self._open[tenant] += 1
        try:
            yield True
        finally:
            self._open[tenant] -= 1
            if not self._open[tenant]:
                del self._open[tenant]


def too_many_streams() -> web.Response:
    return json_error(
        429, "too many open event streams for this tenant", headers={"Retry-After": "5"}
    )


async def cancel_firmly(task: asyncio.Task[Any], *, within: float = 2.0) -> None:
    """Cancel `task` and wait for it, cancelling again while it runs on. A task blocked
    in a Redis read (redis-py 5.3 with hiredis) was seen to swallow the first cancel
    and read on until a shutdown gave up on it; the second one ends it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not task.done() and loop.time() < deadline:
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if not task.done():
        log.error("event_stream_reader_stuck", task=task.get_name())


def _frame(message: SseMessage) -> bytes:
    head = f"id: {message.id}\n" if message.id is not None else ""
    return f"{head}event: {message.event}\n".encode() + b"data: " + message.data + b"\n\n"


async def stream_events(
    request: web.Request,
    messages: AsyncIterator[SseMessage],
    *,
    keepalive: float,
    closing: asyncio.Event,
) -> web.StreamResponse:
    """Answer `request` with `messages` as they come, until the client leaves or the
    server closes."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache, no-store",
            "X-Accel-Buffering": "no",  # nginx: pass each event on at once
        }
    )
    await response.prepare(request)
    queue: asyncio.Queue[SseMessage] = asyncio.Queue(maxsize=100)

    async def read() -> None:
        async for message in messages:
            await queue.put(message)

    reader = asyncio.create_task(read(), name="sse-reader")
    closed = asyncio.create_task(closing.wait(), name="sse-closing")
    getter: asyncio.Task[SseMessage] | None = None
    try:
        await response.write(f"retry: {RETRY_MS}\n: open\n\n".encode())
        while not closing.is_set() and not reader.done():
            if getter is None:
                getter = asyncio.create_task(queue.get())
            done, _ = await asyncio.wait(
                (getter, closed, reader), timeout=keepalive, return_when=asyncio.FIRST_COMPLETED
            )
            if getter in done:
                await response.write(_frame(getter.result()))
                getter = None
            elif not done:
                await response.write(b": keep-alive\n\n")
    except (ConnectionResetError, ConnectionError):
        log.info("event_stream_client_gone")
    finally:
        for task in (closed, getter):
            if task is not None:
                task.cancel()
        await cancel_firmly(reader)
        await asyncio.gather(closed, *(t for t in (getter,) if t), return_exceptions=True)
        with contextlib.suppress(Exception):
            await messages.aclose()  # type: ignore[attr-defined]
    if reader.done() and not reader.cancelled() and reader.exception() is not None:
        log.warning("event_stream_failed", error=type(reader.exception()).__name__)
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response
