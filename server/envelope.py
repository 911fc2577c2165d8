"""A customer message's queue body, written straight from the fields the webhook's own
model already validated.

Building `InboundMessage` and dumping it validated every field a second time and
walked the model twice more to serialize it, on the path every webhook takes. The
body written here is the one `encode(InboundMessage(...))` writes for the same fields
(tests/server/test_envelope.py holds them to that); `orderbot.envelopes` stays the
one reader, and the worker decodes and validates the body as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from orderbot.envelopes import SCHEMA_VERSION, Attachment, Location, Provider, utcnow


@dataclass(frozen=True, slots=True)
class QueuedBody:
    """What the ingest needs of a message: its partition key, its ids and its bytes."""

    provider: Provider
    tenant: str
    key: str  # the conversation's key: which partition the message goes to
    message_id: str
    body: bytes


def inbound_body(
    *,
    message_id: str,
    tenant: str,
    provider: Provider,
    client_id: str,
    transport: str | None,
    channel_id: str | None,
    text: str,
    dialog_id: str | None,
    client_phone: str | None = None,
    location: Location | None = None,
    attachments: Sequence[Attachment] = (),
) -> QueuedBody:
    """The body of an `InboundMessage` of these fields, received now. The caller has
    validated them against the message's own limits (ids, lengths, attachment count)."""
    envelope = {
        "v": SCHEMA_VERSION,
        "message_id": message_id,
        "conversation": {
            "tenant": tenant,
            "provider": provider,
            "client_id": client_id,
            "transport": transport,
            "channel_id": channel_id,
        },
        "text": text,
        "dialog_id": dialog_id,
        "received_at": utcnow(),
        "client_phone": client_phone,
        "location": None if location is None else location.model_dump(),
        "attachments": [a.model_dump() for a in attachments],
    }
    return QueuedBody(
        provider=provider,
        tenant=tenant,
        key=f"{tenant}:{provider}:{client_id}",
        message_id=message_id,
        body=orjson.dumps(envelope, option=orjson.OPT_UTC_Z),
    )
