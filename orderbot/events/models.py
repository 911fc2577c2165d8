"""The one shape of a live event, as publishers write it and browsers read it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

EventKind = Literal["order", "message", "status", "conversation"]


class LiveEvent(BaseModel):
    """`data` is JSON-safe (strings, numbers, lists, dicts) so that the bus can store it
    and a browser can read it as it is. `id` is the bus's own: None when published,
    set when read back, and what a reconnecting browser sends as Last-Event-ID."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str = Field(min_length=1)
    kind: EventKind
    at: datetime
    data: dict[str, Any]
    id: str | None = None

    @classmethod
    def now(cls, tenant: str, kind: EventKind, **data: Any) -> LiveEvent:
        return cls(tenant=tenant, kind=kind, at=datetime.now(UTC), data=data)
