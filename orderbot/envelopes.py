"""What travels through the broker, and how it is read back.

Every queue body is a versioned JSON envelope so a message written by an older
process (or hand-published by an operator) is either understood or parked in the
DLQ with a reason; never guessed at.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orderbot.errors import PoisonMessage, Unreadable

# `webchat`: orderbot's own chat page (/chat), whose replies go to the page's live stream.
Provider = Literal["chat2desk", "twilio", "webchat"]
SCHEMA_VERSION = 1
# A customer's partition carries two kinds of body since events joined the messages. An
# event is written as version 2, which a worker that knows only customer messages parks
# in the DLQ as `unknown_version` instead of reading it as something the customer wrote;
# customer messages stay version 1, so such a worker still serves them during a rollout.
EVENT_SCHEMA_VERSION = 2


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


class Location(BaseModel):
    """A location the customer shared: a WhatsApp or Telegram pin, with the place's name
    when the messenger sends one."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    latitude: float = Field(ge=-90, le=90, allow_inf_nan=False)
    longitude: float = Field(ge=-180, le=180, allow_inf_nan=False)
    label: str | None = Field(default=None, max_length=512)


class Attachment(BaseModel):
    """A photo, voice note or file the customer sent, as the provider's link to it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    url: str = Field(min_length=1, max_length=2048)
    content_type: str | None = Field(default=None, max_length=128)


# A message carries at most this many attachments (Twilio's limit is ten media).
MAX_ATTACHMENTS = 10


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
    # Added in a later release, optional so that a message queued before still reads.
    location: Location | None = None
    attachments: tuple[Attachment, ...] = Field(default=(), max_length=MAX_ATTACHMENTS)

    @property
    def own_phone(self) -> str | None:
        """The number the customer writes from, when the channel tells it: the profile's,
        or a WhatsApp sender's own (Twilio's ``whatsapp:+996…``)."""
        if self.client_phone:
            return self.client_phone
        if self.conversation.provider == "twilio":
            return self.conversation.client_id.removeprefix("whatsapp:")
        return None


ConversationEventType = Literal["operator_message", "dialog_closed"]


class ConversationEvent(_Envelope):
    """Something that happened in a customer's conversation other than their message: an
    operator wrote to them, or the provider closed the dialog. It travels in the
    customer's messages partition, so it keeps its place among what they wrote."""

    v: int = EVENT_SCHEMA_VERSION
    kind: Literal["conversation_event"] = "conversation_event"
    event_id: str = Field(min_length=1, max_length=160)  # also the AMQP message id
    conversation: Conversation
    event: ConversationEventType
    # The provider's id of the operator's message: the bot's own sends come back as the
    # same event, told apart by the id the provider answered our send with.
    message_id: str | None = Field(default=None, max_length=128)
    operator_id: str | None = Field(default=None, max_length=128)
    dialog_id: str | None = Field(default=None, max_length=128)
    received_at: datetime = Field(default_factory=utcnow)


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
    raw = _object(model.__name__, body)
    if raw.get("v") != model.model_fields["v"].default:
        raise PoisonMessage(
            f"unknown schema version {raw.get('v')!r} for {model.__name__}",
            kind=Unreadable.UNKNOWN_VERSION,
        )
    return _validate(model, raw)


def decode_queued(body: bytes) -> InboundMessage | ConversationEvent:
    """A body of a customer's messages partition: their message, or an event."""
    raw = _object(InboundMessage.__name__, body)
    if raw.get("v") == EVENT_SCHEMA_VERSION and raw.get("kind") == "conversation_event":
        return _validate(ConversationEvent, raw)
    if raw.get("v") != SCHEMA_VERSION:
        raise PoisonMessage(
            f"unknown schema version {raw.get('v')!r} for InboundMessage",
            kind=Unreadable.UNKNOWN_VERSION,
        )
    return _validate(InboundMessage, raw)


def _object(name: str, body: bytes) -> dict[str, Any]:
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise PoisonMessage(f"{name} body is not JSON") from None
    if not isinstance(raw, dict):
        raise PoisonMessage(f"{name} body is not a JSON object")
    return raw


def _validate(model: type[E], raw: dict[str, Any]) -> E:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise PoisonMessage(f"invalid {model.__name__}: {where}: {first['msg']}") from None


def encode(envelope: _Envelope) -> bytes:
    return envelope.model_dump_json().encode()
