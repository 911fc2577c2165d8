"""Dialog state and processed-message markers in Redis.

The state and the marker that a message was applied are written by one script
that first checks the writer still holds the customer's lock, so a step is applied
at most once and never over a newer step's state.
"""

from __future__ import annotations

from datetime import timedelta

from redis.asyncio import Redis

from dialog import DialogState
from orderbot.envelopes import Conversation, InboundMessage

_COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('SET', KEYS[3], '1', 'PX', ARGV[4])
return 1
"""


class LockLost(Exception):
    """The customer's lock expired under us; the step must be retried from the start."""


class DialogStore:
    def __init__(
        self,
        redis: Redis,
        prefix: str,
        *,
        state_ttl: timedelta,
        dedupe_ttl: timedelta,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._state_ttl_ms = int(state_ttl.total_seconds() * 1000)
        self._dedupe_ttl_ms = int(dedupe_ttl.total_seconds() * 1000)
        self._commit = redis.register_script(_COMMIT)

    def state_key(self, conversation: Conversation) -> str:
        return f"{self._prefix}dialog:{conversation.key}"

    def processed_key(self, message: InboundMessage) -> str:
        c = message.conversation
        return f"{self._prefix}processed:{c.tenant}:{c.provider}:{message.message_id}"

    async def is_processed(self, message: InboundMessage) -> bool:
        return bool(await self._redis.exists(self.processed_key(message)))

    async def load(self, conversation: Conversation) -> DialogState:
        raw = await self._redis.get(self.state_key(conversation))
        if raw is None:
            return DialogState()
        return DialogState.model_validate_json(raw)

    async def commit(
        self,
        message: InboundMessage,
        state: DialogState,
        *,
        lock_key: str,
        lock_token: str,
    ) -> None:
        written = await self._commit(
            keys=[lock_key, self.state_key(message.conversation), self.processed_key(message)],
            args=[lock_token, state.model_dump_json(), self._state_ttl_ms, self._dedupe_ttl_ms],
        )
        if not written:
            raise LockLost(f"lost the lock of {message.conversation.key} before commit")
