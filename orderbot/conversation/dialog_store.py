"""Dialog state and processed-message markers in Redis.

The state and the marker that a message was applied are written by one script
that first checks the writer still holds the customer's lock, so a step is applied
at most once and never over a newer step's state.

A step talks to Redis twice: `begin` takes the customer's lock and, only if it got
it, reads the processed-marker, the state and the number of the customer's replies
waiting in the outbox; `commit` checks the lock's token, writes state and marker, and
may delete the lock in the same script.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from redis.asyncio import Redis

from dialog import DialogState
from orderbot.conversation.batch import batch_for
from orderbot.conversation.keys import Keys
from orderbot.envelopes import InboundMessage
from orderbot.errors import LockLost

# KEYS: lock, processed-marker, state, the customer's outbox order. ARGV: token, lease ms.
# nil: the lock is busy. {1}: already applied. {0, waiting replies, state or nil}.
_BEGIN = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {1}
end
return {0, redis.call('ZCARD', KEYS[4]), redis.call('GET', KEYS[3])}
"""

# KEYS: lock, state, processed-marker. ARGV: token, state, state ttl, marker ttl, release.
_COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('SET', KEYS[3], '1', 'PX', ARGV[4])
if ARGV[5] == '1' then
  redis.call('DEL', KEYS[1])
end
return 1
"""


@dataclass(frozen=True, slots=True)
class Begun:
    """What a step reads under the customer's lock, in the round trip that took it."""

    processed: bool
    waiting_replies: int = 0
    raw_state: str | None = None

    def state(self) -> DialogState:
        if self.raw_state is None:
            return DialogState()
        return DialogState.model_validate_json(self.raw_state)


class DialogStore:
    def __init__(
        self,
        redis: Redis,
        prefix: str,
        *,
        state_ttl: timedelta,
        dedupe_ttl: timedelta,
    ) -> None:
        self.keys = Keys(prefix)
        self._state_ttl_ms = int(state_ttl.total_seconds() * 1000)
        self._dedupe_ttl_ms = int(dedupe_ttl.total_seconds() * 1000)
        batch = batch_for(redis)  # concurrent steps share their round trips
        self._commit = batch.script(_COMMIT)
        self._begin = batch.script(_BEGIN)

    def begin(self, message: InboundMessage) -> Callable[[str, str, int], Awaitable[Begun | None]]:
        """A lock taker for `ClientLocks.hold_loading` that loads what the step needs."""
        keys = [
            self.keys.processed(message),
            self.keys.dialog(message.conversation),
            self.keys.outbox_order(message.conversation),
        ]

        async def take(lock_key: str, token: str, lease_ms: int) -> Begun | None:
            reply = await self._begin(keys=[lock_key, *keys], args=[token, lease_ms])
            if reply is None:
                return None
            if int(reply[0]):
                return Begun(processed=True)
            return Begun(
                processed=False,
                waiting_replies=int(reply[1]),
                raw_state=reply[2] if len(reply) > 2 else None,
            )

        return take

    async def commit(
        self,
        message: InboundMessage,
        state: DialogState,
        *,
        lock_key: str,
        lock_token: str,
        release: bool = False,
    ) -> None:
        """Write state and marker if the lock is still ours; `release`: and delete it."""
        written = await self._commit(
            keys=[lock_key, self.keys.dialog(message.conversation), self.keys.processed(message)],
            args=[
                lock_token,
                state.model_dump_json(),
                self._state_ttl_ms,
                self._dedupe_ttl_ms,
                "1" if release else "0",
            ],
        )
        if not written:
            raise LockLost(f"lost the lock of {message.conversation.key} before commit")
