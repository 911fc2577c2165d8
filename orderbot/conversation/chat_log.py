"""A web chat session's messages, both ways, as a Redis stream its page reads live.

The page is the web chat's only delivery channel: a reply is delivered when it is
appended here (orderbot/delivery/webchat.py), and the page reads the stream with
XREAD BLOCK over Server-Sent Events, resuming by entry id after a reconnect, or
from the start after a reload. The stream keeps about WEBCHAT_HISTORY messages and
expires DIALOG_TTL after the last one, as the dialog does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import orjson
import structlog
from redis.asyncio import Redis

from orderbot.conversation.keys import Keys
from orderbot.envelopes import Conversation

log = structlog.get_logger(__name__)

Direction = Literal["in", "out"]  # in: the customer wrote; out: the bot answered


@dataclass(frozen=True, slots=True)
class ChatEntry:
    id: str  # the stream entry's id: the page's Last-Event-ID
    direction: Direction
    text: str
    at: str
    message_id: str | None  # the customer's own id of an inbound message


class ChatLog:
    def __init__(
        self,
        redis: Redis,
        prefix: str,
        *,
        max_length: int,
        ttl: float,
        block: float = 2.0,
        retry_delay: float = 0.5,
    ) -> None:
        self._redis = redis
        self._keys = Keys(prefix)
        self._max_length = max_length
        self._ttl = max(1, int(ttl))
        self._block_ms = max(1, int(block * 1000))
        self._retry_delay = retry_delay

    async def append(
        self,
        conversation: Conversation,
        direction: Direction,
        text: str,
        *,
        message_id: str | None = None,
    ) -> str:
        """Append one message; returns its entry id. Raises what Redis raises."""
        key = self._keys.chat(conversation)
        body = {"direction": direction, "text": text, "at": datetime.now(UTC).isoformat()}
        if message_id is not None:
            body["message_id"] = message_id
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(key, {"m": orjson.dumps(body)}, maxlen=self._max_length, approximate=True)
            pipe.expire(key, self._ttl)
            entry_id, _ = await pipe.execute()
        return str(entry_id)

    async def read(
        self, conversation: Conversation, after: str | None = None
    ) -> AsyncIterator[ChatEntry]:
        """Every message after `after` (None: from the start), then each new one as it
        comes, until closed. A Redis outage is waited out, from the same place."""
        key = self._keys.chat(conversation)
        cursor = after or "0-0"
        while True:
            try:
                answer = await self._redis.xread({key: cursor}, count=100, block=self._block_ms)
            except Exception as exc:  # a page waits Redis out
                log.warning("chat_log_read_failed", error=type(exc).__name__)
                await asyncio.sleep(self._retry_delay)
                continue
            for _stream, entries in answer or ():
                for entry_id, fields in entries:
                    cursor = str(entry_id)
                    entry = _decode(cursor, fields)
                    if entry is not None:
                        yield entry


def _decode(entry_id: str, fields: dict[str, str]) -> ChatEntry | None:
    try:
        raw = orjson.loads(fields["m"])
        direction = raw["direction"]
        if direction not in ("in", "out"):
            raise ValueError(direction)
        return ChatEntry(
            id=entry_id,
            direction=direction,
            text=str(raw["text"]),
            at=str(raw["at"]),
            message_id=raw.get("message_id"),
        )
    except (KeyError, ValueError, TypeError, orjson.JSONDecodeError):
        log.warning("chat_entry_unreadable", id=entry_id)
        return None
