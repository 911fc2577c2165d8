"""The queue body the edge writes from validated fields is the one the envelope model
writes: the worker reads the same message, and the bytes are the model's own."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from orderbot.envelopes import (
    Attachment,
    Conversation,
    InboundMessage,
    Location,
    decode_queued,
    encode,
)
from server import envelope
from server.envelope import inbound_body

RECEIVED = datetime(2026, 12, 2, 7, 30, 1, 250_000, tzinfo=UTC)

CASES: dict[str, dict[str, Any]] = {
    "text only": {
        "message_id": "m-1",
        "tenant": "acme",
        "provider": "chat2desk",
        "client_id": "42",
        "transport": None,
        "channel_id": None,
        "text": "Здравствуйте, хочу заказать",
        "dialog_id": None,
    },
    "every field": {
        "message_id": "m-2",
        "tenant": "acme",
        "provider": "chat2desk",
        "client_id": "c\"'\\x",
        "transport": "whatsapp",
        "channel_id": "7",
        "text": 'a "quoted"\nline\t\u2028 and \U0001f600',
        "dialog_id": "d-9",
        "client_phone": "+996555123456",
        "location": Location(latitude=42.8746, longitude=-74.5),
        "attachments": (
            Attachment(url="https://x.example/a.jpg", content_type="image"),
            Attachment(url="https://x.example/b.pdf"),
        ),
    },
    "empty text": {
        "message_id": "m-3",
        "tenant": "t",
        "provider": "webchat",
        "client_id": "w",
        "transport": None,
        "channel_id": None,
        "text": "",
        "dialog_id": None,
    },
}


def _model(fields: dict[str, Any], received_at: datetime) -> InboundMessage:
    return InboundMessage(
        message_id=fields["message_id"],
        conversation=Conversation(
            tenant=fields["tenant"],
            provider=fields["provider"],
            client_id=fields["client_id"],
            transport=fields["transport"],
            channel_id=fields["channel_id"],
        ),
        text=fields["text"],
        dialog_id=fields["dialog_id"],
        received_at=received_at,
        client_phone=fields.get("client_phone"),
        location=fields.get("location"),
        attachments=fields.get("attachments", ()),
    )


@pytest.fixture
def received_now(monkeypatch: pytest.MonkeyPatch) -> datetime:
    monkeypatch.setattr(envelope, "utcnow", lambda: RECEIVED)
    return RECEIVED


@pytest.mark.parametrize("case", CASES)
def test_inbound_body_is_the_bytes_the_model_encodes(case: str, received_now: datetime) -> None:
    fields = CASES[case]
    assert inbound_body(**fields).body == encode(_model(fields, received_now))


@pytest.mark.parametrize("case", CASES)
def test_inbound_body_reads_back_as_the_message(case: str, received_now: datetime) -> None:
    fields = CASES[case]
    assert decode_queued(inbound_body(**fields).body) == _model(fields, received_now)


def test_inbound_body_is_routed_by_the_conversation_key() -> None:
    fields = CASES["every field"]
    queued = inbound_body(**fields)
    assert queued.key == _model(fields, RECEIVED).conversation.key
    assert (queued.message_id, queued.tenant, queued.provider) == ("m-2", "acme", "chat2desk")


def test_inbound_body_with_whole_seconds_keeps_the_models_timestamp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    whole = RECEIVED.replace(microsecond=0)
    monkeypatch.setattr(envelope, "utcnow", lambda: whole)
    fields = CASES["text only"]
    assert inbound_body(**fields).body == encode(_model(fields, whole))
