"""A reader of Server-Sent Events over an aiohttp client response, as a browser's
EventSource reads them: `id`, `event` and `data` lines, a blank line ends one, comment
lines (`: …`) are kept apart (the keep-alives)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson


@dataclass(frozen=True)
class SseEvent:
    id: str | None
    event: str
    data: Any


@dataclass
class SseReader:
    response: aiohttp.ClientResponse
    comments: list[str] = field(default_factory=list)
    retry: int | None = None

    async def next(self, timeout: float = 15) -> SseEvent:
        """The next event; TimeoutError if none comes, EOFError if the stream ended."""
        fields: dict[str, str] = {}
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    raise EOFError("the event stream ended")
                line = raw.decode().rstrip("\n")
                if not line:
                    if "data" in fields:
                        return SseEvent(
                            fields.get("id"),
                            fields.get("event", "message"),
                            orjson.loads(fields["data"]),
                        )
                    continue
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "retry":
                    self.retry = int(value)
                else:
                    fields[name] = value

    async def until(
        self, wanted: Callable[[SseEvent], bool], timeout: float = 30
    ) -> list[SseEvent]:
        """Every event up to and including the first one `wanted` accepts."""
        seen: list[SseEvent] = []
        async with asyncio.timeout(timeout):
            while True:
                event = await self.next(timeout)
                seen.append(event)
                if wanted(event):
                    return seen

    async def ended(self, timeout: float = 15) -> bool:
        """Whether the server ends the stream (after any events still in it)."""
        async with asyncio.timeout(timeout):
            while await self.response.content.readline():
                pass
        return True
