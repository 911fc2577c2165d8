"""The web chat's sender: a reply is delivered by appending it to the session's chat log,
which the customer's page reads live (orderbot/conversation/chat_log.py).

Redis failing is transient like a provider's 5xx: the worker retries, then the outbox.
No provider rate limit applies (nothing leaves orderbot); the customer's own budget
still does, in the worker.
"""

from __future__ import annotations

import redis.exceptions
from redis.asyncio import Redis

from orderbot.config.settings import Settings
from orderbot.conversation.chat_log import ChatLog
from orderbot.envelopes import Conversation
from orderbot.errors import TransientSendError
from orderbot.runtime import metrics

_OK, _TRANSIENT = (metrics.SENDS.labels("webchat", outcome) for outcome in ("ok", "transient"))


class WebchatSender:
    def __init__(self, log: ChatLog) -> None:
        self._log = log

    async def send(self, conversation: Conversation, text: str) -> None:
        try:
            await self._log.append(conversation, "out", text)
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            _TRANSIENT.inc()
            raise TransientSendError(f"chat log unavailable: {type(exc).__name__}") from exc
        _OK.inc()


def chat_log(redis: Redis, settings: Settings) -> ChatLog:
    return ChatLog(
        redis,
        settings.redis_key_prefix,
        max_length=settings.webchat_history,
        ttl=settings.dialog_ttl.total_seconds(),
    )
