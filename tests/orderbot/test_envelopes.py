"""Queue bodies across versions: an event is read by a worker that knows events, and
parked as of an unknown version by one that knows only customer messages."""

from __future__ import annotations

import pytest

from orderbot.envelopes import (
    Attachment,
    Conversation,
    ConversationEvent,
    InboundMessage,
    Location,
    decode,
    decode_queued,
    encode,
)
from orderbot.errors import PoisonMessage, Unreadable

CONVERSATION = Conversation(tenant="t", provider="chat2desk", client_id="17")


def _event() -> ConversationEvent:
    return ConversationEvent(
        event_id="outbox:9",
        conversation=CONVERSATION,
        event="operator_message",
        message_id="9",
        operator_id="41164",
    )


def test_a_reader_of_customer_messages_alone_parks_an_event_as_of_an_unknown_version() -> None:
    with pytest.raises(PoisonMessage) as refused:
        decode(InboundMessage, encode(_event()))

    assert refused.value.kind is Unreadable.UNKNOWN_VERSION


def test_the_partition_reader_takes_an_event_for_an_event() -> None:
    event = _event()

    assert decode_queued(encode(event)) == event


def test_the_partition_reader_takes_a_customer_message_for_one() -> None:
    message = InboundMessage(message_id="m", conversation=CONVERSATION, text="привет")

    assert decode_queued(encode(message)) == message


def test_a_customer_message_queued_before_pins_existed_still_reads() -> None:
    body = (
        b'{"v": 1, "message_id": "m", "text": "hi", "received_at": "2026-11-01T10:00:00Z",'
        b' "conversation": {"tenant": "t", "provider": "chat2desk", "client_id": "17"}}'
    )

    message = decode_queued(body)

    assert isinstance(message, InboundMessage)
    assert (message.location, message.attachments) == (None, ())


def test_a_pin_and_attachments_travel_through_the_queue() -> None:
    message = InboundMessage(
        message_id="m",
        conversation=CONVERSATION,
        text="",
        location=Location(latitude=42.87, longitude=74.59, label="Ala-Too Square"),
        attachments=(Attachment(url="https://cdn.example/p.jpg", content_type="image/jpeg"),),
    )

    assert decode_queued(encode(message)) == message


def test_a_location_off_the_globe_is_unreadable() -> None:
    body = encode(InboundMessage(message_id="m", conversation=CONVERSATION, text="")).replace(
        b'"location":null', b'"location":{"latitude":91,"longitude":0}'
    )

    with pytest.raises(PoisonMessage):
        decode_queued(body)
