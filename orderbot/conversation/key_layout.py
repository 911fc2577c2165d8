"""Moving a deployment's Redis keys to the layout with the customer's hash tag.

A deployment upgraded from the untagged layout (`dialog:{tenant}:{provider}:{client}`
and so on) has live dialogs, waiting replies, sent-markers and hand-offs under the old
names; the new code would not find them, and a customer mid-order would start again.
`orderbot migrate` (run on every deploy) therefore renames every such key to its tagged
name, keeping its TTL (RENAME does). A key whose tagged name exists already was
written by the new code after the upgrade began and is newer: the old one is deleted.
Renaming is idempotent, so running the migration again after the last process of the
old version stopped moves whatever that process wrote meanwhile.

Processed-markers cannot be renamed: the old name holds the message id but not the
customer, and the customer is part of the tagged name. They are left where they are,
and the migration sets a flag key that lives as long as the longest-lived of them;
while it exists, a step and the reconciler also look for a message's untagged marker
(`UntaggedMarkers`), so a message applied before the upgrade is not applied again. After
DEDUPE_TTL the markers and the flag are gone by themselves and nothing reads them again.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from time import monotonic
from typing import Any

import structlog
from redis.asyncio import Redis

from orderbot.conversation.batch import batch_for
from orderbot.conversation.keys import Keys
from orderbot.envelopes import InboundMessage

log = structlog.get_logger(__name__)

# The kinds of customer keys, longest first so that `ratelimit:customer:` wins over nothing.
_CUSTOMER_KINDS = (
    "ratelimit:customer:",
    "ratelimit:notice:",
    "dialog:",
    "rating:",
    "handoff:",
    "lock:",
    "outbox:",
)
# tenant (a slug: no colon), provider, and the rest: the client id and, for the outbox, a suffix.
_UNTAGGED = re.compile(
    r"^(?P<tenant>[a-z0-9][a-z0-9_-]{0,62}):(?P<provider>chat2desk|twilio):(?P<rest>.+)$"
)
_OUTBOX_TAILS = (":order", ":seen", ":seq")
_OUTBOX_REPLY = (":sent:", ":sending:")
_LOOK_EVERY = 60.0  # seconds between looks at the untagged-markers flag


@dataclass
class Retagged:
    renamed: int = 0
    superseded: int = 0  # the tagged key existed already: the old one was deleted
    untagged_markers: int = 0


def tagged_name(prefix: str, key: str) -> str | None:
    """The tagged name of a key of the untagged layout, or None (not one: a key of the
    tagged layout, a processed-marker, or a key that is no customer's)."""
    if not key.startswith(prefix):
        return None
    body = key[len(prefix) :]
    kind = next((k for k in _CUSTOMER_KINDS if body.startswith(k)), None)
    if kind is None:
        return None
    match = _UNTAGGED.match(body[len(kind) :])
    if match is None:
        return None
    customer_head = f"{match['tenant']}:{match['provider']}:"
    rest = match["rest"]
    tail = ""
    if kind == "outbox:":
        at = min((i for m in _OUTBOX_REPLY if (i := rest.find(m)) > 0), default=-1)
        if at > 0:
            rest, tail = rest[:at], rest[at:]
        elif (end := next((t for t in _OUTBOX_TAILS if rest.endswith(t)), None)) is not None:
            rest, tail = rest[: -len(end)], end
        else:
            return None
        if not rest:
            return None
    return f"{prefix}{kind}{Keys.customer(customer_head + rest)}{tail}"


async def retag_keys(redis: Redis, prefix: str, *, scan_count: int = 1000) -> Retagged:
    """Rename every key of the untagged layout under `prefix`; flag the untagged markers."""
    done = Retagged()
    marker_ttl_ms = 0
    markers = re.compile(
        re.escape(prefix) + r"processed:[a-z0-9][a-z0-9_-]{0,62}:(chat2desk|twilio):"
    )
    async for raw in redis.scan_iter(match=_glob_escape(prefix) + "*", count=scan_count):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        if markers.match(key):
            done.untagged_markers += 1
            marker_ttl_ms = max(marker_ttl_ms, int(await redis.pttl(key)))
            continue
        new = tagged_name(prefix, key)
        if new is None:
            continue
        try:
            moved = await redis.renamenx(key, new)
        except Exception as exc:  # the key expired between SCAN and RENAMENX
            if "no such key" in str(exc).lower():
                continue
            raise
        if moved:
            done.renamed += 1
        else:
            await redis.delete(key)
            done.superseded += 1
    if marker_ttl_ms > 0:
        flag = Keys(prefix).untagged_markers()
        # Never shortened: a second run must not close a window a first run opened longer.
        current = int(await redis.pttl(flag))
        if current < marker_ttl_ms:
            await redis.set(flag, "1", px=marker_ttl_ms)
    log.info(
        "redis_keys_retagged",
        renamed=done.renamed,
        superseded=done.superseded,
        untagged_markers=done.untagged_markers,
    )
    return done


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class UntaggedMarkers:
    """The processed-markers left in the untagged layout, read while the migration's flag
    lives. The flag is looked at once a minute, riding with the process's other calls;
    until the first answer the window counts as open (one needless EXISTS at worst)."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._keys = Keys(prefix)
        self._batch = batch_for(redis)
        self._until = float("inf")
        self._next_look = 0.0

    def check(self, message: InboundMessage) -> asyncio.Future[Any] | None:
        """A queued EXISTS of the message's untagged marker, or None: there are none left.
        Synchronous, so that a caller queues it in the same round trip as its own call."""
        now = monotonic()
        if now >= self._next_look:
            self._next_look = now + _LOOK_EVERY
            look = self._batch.call(("PTTL", self._keys.untagged_markers()))
            look.add_done_callback(self._learn)
        if now >= self._until:
            return None
        return self._batch.call(("EXISTS", self._keys.processed_untagged(message)))

    def _learn(self, look: asyncio.Future[Any]) -> None:
        if look.cancelled() or look.exception() is not None:
            self._next_look = 0.0  # look again with the next call
            return
        left_ms = int(look.result())
        self._until = monotonic() + left_ms / 1000 if left_ms > 0 else 0.0

    async def applied(self, message: InboundMessage) -> bool:
        pending = self.check(message)
        return pending is not None and bool(await pending)
