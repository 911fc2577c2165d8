"""An in-memory EventBus, for tests of code that publishes or subscribes without Redis."""

from __future__ import annotations

import asyncio
import functools
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence

from orderbot.events.models import LiveEvent


class InMemoryEventBus:
    """Keeps every event in order per tenant, ids "1-0", "2-0", … like a stream's."""

    def __init__(self) -> None:
        self._events: defaultdict[str, list[LiveEvent]] = defaultdict(list)
        self._news = asyncio.Condition()
        self._seq = 0

    @property
    def published(self) -> list[LiveEvent]:
        return sorted(
            (e for events in self._events.values() for e in events), key=lambda e: _seq(e.id)
        )

    async def publish(self, event: LiveEvent) -> None:
        self._seq += 1
        self._events[event.tenant].append(event.model_copy(update={"id": f"{self._seq}-0"}))
        async with self._news:
            self._news.notify_all()

    async def publish_many(self, events: Sequence[LiveEvent]) -> None:
        for event in events:
            await self.publish(event)

    def _has_after(self, tenant: str, after: int) -> bool:
        events = self._events[tenant]
        return bool(events) and _seq(events[-1].id) > after

    async def subscribe(self, tenant: str, last_id: str | None = None) -> AsyncIterator[LiveEvent]:
        after = _seq(last_id) if last_id is not None else self._seq
        while True:
            async with self._news:
                await self._news.wait_for(functools.partial(self._has_after, tenant, after))
            news = [e for e in self._events[tenant] if _seq(e.id) > after]
            for event in news:
                after = _seq(event.id)
                yield event


def _seq(event_id: str | None) -> int:
    try:
        return int((event_id or "0").split("-", 1)[0])
    except ValueError:
        return 0
