"""What the console's handlers share: its secrets, its sign-in throttle, its Redis keys."""

from __future__ import annotations

from dataclasses import dataclass

from orderbot.conversation.keys import Keys
from server.console.guard import SignInThrottle


@dataclass(frozen=True)
class Console:
    secrets: tuple[str, ...]  # the first signs, any verifies
    ttl_seconds: float
    throttle: SignInThrottle
    keys: Keys
    public_base_url: str | None
