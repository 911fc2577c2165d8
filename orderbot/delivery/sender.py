"""What the worker and the outbox need from a provider: send a text, and say how it failed.

The failure class decides a reply's fate: a transient one is retried (in the worker,
then through the outbox), a permanent one goes to the DLQ at once, because no
amount of retrying makes an invalid client id valid.
"""

from __future__ import annotations

from typing import Protocol

from orderbot.envelopes import Conversation
from orderbot.errors import PermanentSendError, SendError, TransientSendError


class ReplySender(Protocol):
    async def send(self, conversation: Conversation, text: str) -> str | None:
        """Deliver one text; returns the provider's id of the sent message when it gives
        one (what its delivery statuses name). Raise TransientSendError or
        PermanentSendError on failure."""


def classify_status(status: int) -> type[SendError] | None:
    """None for success; 408 (timeout), 425 (too early), 429 and 5xx are worth retrying,
    every other 4xx is not."""
    if status < 400:
        return None
    if status in (408, 425, 429) or status >= 500:
        return TransientSendError
    return PermanentSendError


def parse_retry_after(value: str | None, cap: float = 60.0) -> float | None:
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), cap)
    except ValueError:
        return None
