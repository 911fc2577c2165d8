"""What travels through the broker, and how it is read back.

Every queue body is a versioned JSON envelope so a message written by an older
process (or hand-published by an operator) is either understood or parked in the
DLQ with a reason; never guessed at.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orderbot.errors import PoisonMessage, Unreadable

Provider = Literal["chat2desk", "twilio"]
SCHEMA_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    v: int = SCHEMA_VERSION


class Conversation(BaseModel):
    """Where a customer is reachable: enough to answer them on the same channel."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    tenant: str
    provider: Provider
    client_id: str = Field(min_length=1, max_length=128)
    transport: str | None = None
    channel_id: str | None = None

    @property
    def key(self) -> str:
        return f"{self.tenant}:{self.provider}:{self.client_id}"


class InboundMessage(_Envelope):
    """A customer's message, as queued on `messages` by the server."""

    message_id: str = Field(min_length=1, max_length=128)
    conversation: Conversation
    text: str
    dialog_id: str | None = None
    received_at: datetime = Field(default_factory=utcnow)
    # The number the customer's profile at the provider holds (Chat2Desk's client phone),
    # unchecked: the dialog offers it only if it reads as a phone number.
    client_phone: str | None = Field(default=None, max_length=64)

    @property
    def own_phone(self) -> str | None:
        """The number the customer writes from, when the channel tells it: the profile's,
        or a WhatsApp sender's own (Twilio's ``whatsapp:+996…``)."""
        if self.client_phone:
            return self.client_phone
        if self.conversation.provider == "twilio":
            return self.conversation.client_id.removeprefix("whatsapp:")
        return None


class OutboundReply(_Envelope):
    """One reply to send, as queued on `outbox` when the worker could not send it."""

    reply_id: str = Field(min_length=1, max_length=160)
    correlation_id: str
    conversation: Conversation
    text: str
    created_at: datetime = Field(default_factory=utcnow)
    seq: int | None = None


E = TypeVar("E", bound=_Envelope)


def decode(model: type[E], body: bytes) -> E:
    """Read an envelope, checking the version before the shape it implies."""
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise PoisonMessage(f"{model.__name__} body is not JSON") from None
    if not isinstance(raw, dict):
        raise PoisonMessage(f"{model.__name__} body is not a JSON object")
    if raw.get("v") != SCHEMA_VERSION:
        raise PoisonMessage(
            f"unknown schema version {raw.get('v')!r} for {model.__name__}",
            kind=Unreadable.UNKNOWN_VERSION,
        )
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise PoisonMessage(f"invalid {model.__name__}: {where}: {first['msg']}") from None


def encode(envelope: _Envelope) -> bytes:
    return envelope.model_dump_json().encode()
