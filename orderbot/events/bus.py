"""The live event bus: one Redis Stream per tenant.

A stream rather than pub/sub because a browser is not always listening: between an
EventSource's drop and its reconnect (a phone changing networks, a server restart)
pub/sub would lose every event published, while a stream keeps the last
EVENTS_STREAM_LENGTH of them and a reconnect with Last-Event-ID reads on from there.
A stream also needs nothing new to run (PostgreSQL LISTEN/NOTIFY would need a
connection per listener held out of the pool, and keeps nothing either).

Publishing is a side effect of a step that matters more (an order written, a status
moved): `publish` never raises, and gives up after EVENTS_PUBLISH_TIMEOUT, so a Redis
that is slow or gone costs a step at most that long and loses only the live view.

The events go through the process's Redis batch (orderbot/conversation/batch.py, handed in
as `commands`): the events a publish hands on for one tenant are one script run (its
XADDs), those of several tenants and of concurrent steps share one pipelined round trip,
and a batch of events waits out one timeout, not one each. They
may wait a little (a fifth of the timeout at most) for a call that must go now, such as
the commits of the steps that settled on the same history batch, and ride with it:
`publish_many`, told beside the history writer, does; `publish`, which a step awaits,
does not.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

import orjson
import structlog
from prometheus_client import Counter
from pydantic import ValidationError
from redis.asyncio import Redis

from orderbot.events.models import LiveEvent
from orderbot.runtime import metrics

# A Redis argument, as the batch takes it.
Arg = str | int | float

log = structlog.get_logger(__name__)

_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


def is_event_id(value: str) -> bool:
    """Whether `value` can be a Last-Event-ID of the Redis bus (a stream entry id)."""
    return bool(_STREAM_ID.match(value))


class EventBus(Protocol):
    async def publish(self, event: LiveEvent) -> None:
        """Hand the event on; never raises (a failure is logged and counted)."""

    async def publish_many(self, events: Sequence[LiveEvent]) -> None:
        """Hand the events on in their order, together, perhaps a moment later (see
        above); never raises."""

    def subscribe(self, tenant: str, last_id: str | None = None) -> AsyncIterator[LiveEvent]:
        """The tenant's events after `last_id` (None: from now on), each with its id,
        until the iterator is closed."""


class RunScript(Protocol):
    def __call__(
        self, *, keys: Sequence[str], args: Sequence[Arg] = (), within: float = 0.0
    ) -> asyncio.Future[Any]:
        """Queue one run of the script; the future is its reply. `within` > 0: it may wait
        that long for a call that must go now, to ride with."""
        ...


class Commands(Protocol):
    """Where the bus sends its writes: a script, run through a batch of calls."""

    def script(self, source: str) -> RunScript: ...


# KEYS: the tenant's stream. ARGV: its length (about), then the events, oldest first.
_XADD_ALL = """
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'event', ARGV[i])
end
return #ARGV - 1
"""


class RedisEventBus:
    """`stream_key` names a tenant's stream (Keys.events). `commands` sends the writes
    (the process's Redis batch of the same client); reads go to `redis` itself, since a
    blocking XREAD would hold up a batch. `block` is how long one read waits for news:
    below the Redis client's socket timeout, so a quiet tenant is not a timeout."""

    def __init__(
        self,
        redis: Redis,
        stream_key: Callable[[str], str],
        *,
        commands: Commands,
        max_length: int,
        publish_timeout: float,
        block: float = 2.0,
        retry_delay: float = 0.5,
    ) -> None:
        self._redis = redis
        self._xadd_all = commands.script(_XADD_ALL)
        self._key = stream_key
        self._max_length = max_length
        self._timeout = publish_timeout
        self._ride_within = publish_timeout / 5
        self._block_ms = max(1, int(block * 1000))
        self._retry_delay = retry_delay

    async def publish(self, event: LiveEvent) -> None:
        await self._publish((event,), within=0.0)

    async def publish_many(self, events: Sequence[LiveEvent]) -> None:
        await self._publish(events, within=self._ride_within)

    async def _publish(self, events: Sequence[LiveEvent], *, within: float) -> None:
        """One script run per tenant among `events`, all of them awaited under one timeout."""
        groups: dict[str, list[LiveEvent]] = {}
        for event in events:
            groups.setdefault(event.tenant, []).append(event)
        runs: list[tuple[list[LiveEvent], asyncio.Future[Any]]] = []
        done = 0  # runs[:done] are answered
        error: BaseException | None = None
        try:
            for tenant, group in groups.items():
                bodies = [event.model_dump_json(exclude={"id"}) for event in group]
                run = self._xadd_all(
                    keys=[self._key(tenant)], args=[self._max_length, *bodies], within=within
                )
                runs.append((group, run))
            async with asyncio.timeout(self._timeout):
                for group, run in runs:
                    try:
                        await run
                    except Exception as exc:  # this tenant's failed; the others may not have
                        _drop(group, error=exc)
                    else:
                        for event in group:
                            _published(event.kind).inc()
                    done += 1
        except Exception as exc:  # whatever it is, the step goes on
            error = exc
        for _, run in runs[done:]:
            run.cancel()
        _drop([event for group in list(groups.values())[done:] for event in group], error=error)

    async def subscribe(self, tenant: str, last_id: str | None = None) -> AsyncIterator[LiveEvent]:
        key = self._key(tenant)
        cursor = last_id if last_id is not None and is_event_id(last_id) else None
        while True:
            try:
                if cursor is None:
                    cursor = await self._tail(key)
                answer = await self._redis.xread({key: cursor}, count=100, block=self._block_ms)
            except Exception as exc:  # a listener waits Redis out
                log.warning("live_events_read_failed", tenant=tenant, error=type(exc).__name__)
                await asyncio.sleep(self._retry_delay)
                continue
            for _stream, entries in answer or ():
                for entry_id, fields in entries:
                    cursor = entry_id
                    event = _decode(entry_id, fields)
                    if event is not None:
                        yield event

    async def _tail(self, key: str) -> str:
        """The id of the stream's newest entry, so that "from now on" has no gap
        between this call and the first read (XREAD's `$` would have one per read)."""
        newest = await self._redis.xrevrange(key, count=1)
        return str(newest[0][0]) if newest else "0-0"


@functools.cache
def _published(kind: str) -> Counter:
    """The counter of a kind, looked up once rather than on every event."""
    return metrics.EVENTS_PUBLISHED.labels(kind=kind)


def _drop(events: Sequence[LiveEvent], *, error: BaseException | None) -> None:
    for event in events:
        metrics.EVENTS_DROPPED.labels(kind=event.kind).inc()
        log.warning(
            "live_event_dropped",
            kind=event.kind,
            tenant=event.tenant,
            error=type(error).__name__,
        )


def _decode(entry_id: str, fields: dict[str, str]) -> LiveEvent | None:
    try:
        raw = orjson.loads(fields["event"])
        return LiveEvent.model_validate({**raw, "id": entry_id})
    except (KeyError, orjson.JSONDecodeError, ValidationError, TypeError):
        log.warning("live_event_unreadable", id=entry_id)
        return None
