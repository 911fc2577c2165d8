"""What conversation history holds: one entry per message, and the views operators read.

A message's status only moves forward, by rank: a reply that was `sent` and then reported
`delivered` stays `delivered` when a late `sent` (a redelivered step, a re-sent reply)
arrives. `failed` is a send the outbox is still retrying; `undelivered` is a reply the
provider took and then could not deliver (Twilio's failed/undelivered, Chat2Desk's
outbox_status error).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

Direction = Literal["in", "out"]
MessageStatus = Literal[
    "received", "queued", "failed", "dlq", "sent", "delivered", "undelivered", "read"
]
# The same order as orderbot_message_status_rank in schema.sql.
RANK: dict[str, int] = {
    "received": 0,
    "queued": 1,
    "failed": 2,
    "dlq": 3,
    "sent": 4,
    "delivered": 5,
    "undelivered": 5,
    "read": 6,
}


def later(current: str, candidate: str) -> bool:
    """Whether `candidate` moves a message on from `current`."""
    return RANK.get(candidate, -1) > RANK.get(current, -1)


@dataclass(frozen=True)
class HistoryEntry:
    """One message as the pipeline saw it at one moment; entries of the same message (same
    conversation, direction and key) merge into one row."""

    tenant: str
    provider: str
    client_id: str
    direction: Direction
    key: str  # inbound: the provider's message id; outbound: our reply id
    text: str
    at: datetime
    status: MessageStatus
    status_at: datetime
    client_phone: str | None = None
    provider_message_id: str | None = None
    reply_id: str | None = None
    error: str | None = None

    @property
    def identity(self) -> tuple[str, str, str, str, str]:
        return (self.tenant, self.provider, self.client_id, self.direction, self.key)

    def merged(self, newer: HistoryEntry) -> HistoryEntry:
        """This entry with what `newer` adds: the furthest status, the first provider id."""
        status, status_at, error = self.status, self.status_at, self.error
        if later(status, newer.status):
            status, status_at, error = newer.status, newer.status_at, newer.error or error
        return HistoryEntry(
            tenant=self.tenant,
            provider=self.provider,
            client_id=self.client_id,
            direction=self.direction,
            key=self.key,
            text=self.text,
            at=min(self.at, newer.at),
            status=status,
            status_at=status_at,
            client_phone=self.client_phone or newer.client_phone,
            provider_message_id=self.provider_message_id or newer.provider_message_id,
            reply_id=self.reply_id or newer.reply_id,
            error=error,
        )


@dataclass(frozen=True)
class Written:
    """A row the writer inserted or moved on: what the live events tell."""

    tenant: str
    conversation_id: int
    message_id: int
    direction: Direction
    text: str
    provider_message_id: str | None
    status: str
    created: bool


class ConversationView(BaseModel):
    id: int
    provider: str
    client_id: str
    client_phone: str | None = Field(description="the number the customer writes from, if known")
    created_at: datetime
    last_message_at: datetime


class ConversationPage(BaseModel):
    items: list[ConversationView] = Field(description="newest conversation first")
    next_after: int | None = Field(
        description="pass as `after` for the next page; null on the last page"
    )


class MessageView(BaseModel):
    id: int
    direction: Direction = Field(description="in: the customer wrote it; out: the bot's reply")
    text: str
    at: datetime
    status: MessageStatus
    status_at: datetime = Field(description="when the status last changed")
    provider_message_id: str | None
    reply_id: str | None = Field(description="our id of a reply (out only)")
    error: str | None = Field(description="why a send failed or was not delivered")


class MessagePage(BaseModel):
    conversation: ConversationView
    items: list[MessageView] = Field(description="oldest first")
    next_after: int | None = Field(
        description="pass as `after` for the next page; null on the last page"
    )
