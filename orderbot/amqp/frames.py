"""The three AMQP frames of one persistent publish to a queue, encoded in one go.

pamqp encodes a frame by walking its class's field list and dispatching on each
field's type name; for a publish that took longer than everything else the server
does with a webhook but the HTTP parsing. The publishes of this code all have one
shape (default exchange, mandatory, JSON, persistent, priority 0, a message id, a
correlation id, a timestamp, a header table), so their bytes are written directly
here, and tests check them against pamqp's for the same message.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from pamqp import encode

_FRAME_END = b"\xce"
_METHOD, _HEADER, _BODY = 1, 2, 3
_BASIC = 60
_PUBLISH = 40
_FRAME_HEAD = struct.Struct(">BHI")
_HEADER_HEAD = struct.Struct(">HHQH")  # class, weight, body size, property flags
_TIMESTAMP = struct.Struct(">Q")

# Property flags, as AMQP 0-9-1 numbers them from the top bit.
_CONTENT_TYPE = 1 << 15
_HEADERS = 1 << 13
_DELIVERY_MODE = 1 << 12
_PRIORITY = 1 << 11
_CORRELATION_ID = 1 << 10
_MESSAGE_ID = 1 << 7
_TIMESTAMP_FLAG = 1 << 6

_JSON = b"\x10application/json"
_PERSISTENT_PRIORITY_0 = b"\x02\x00"
_EMPTY_TABLE = b"\x00\x00\x00\x00"


def _shortstr(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 255:
        raise ValueError("AMQP short string over 255 bytes")
    return bytes((len(raw),)) + raw


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return _FRAME_HEAD.pack(kind, channel, len(payload)) + payload + _FRAME_END


def publish_frames(
    channel: int,
    routing_key: str,
    body: bytes,
    *,
    message_id: str,
    correlation_id: str | None,
    headers: Mapping[str, object] | None,
    timestamp: int,
    max_content_size: int,
) -> bytes:
    """Basic.Publish (default exchange, mandatory), its content header, and the body in
    frames of at most `max_content_size` bytes: what aiormq's `basic_publish` sends for
    `Basic.Properties(content_type="application/json", delivery_mode=2, priority=0,
    headers=headers or {}, message_id, correlation_id, timestamp)`."""
    method = (
        b"\x00\x3c\x00\x28\x00\x00\x00"  # Basic.Publish, ticket 0, exchange ""
        + _shortstr(routing_key)
        + b"\x01"  # mandatory, not immediate
    )
    flags = _CONTENT_TYPE | _HEADERS | _DELIVERY_MODE | _PRIORITY | _MESSAGE_ID | _TIMESTAMP_FLAG
    table = encode.field_table(dict(headers)) if headers else _EMPTY_TABLE  # type: ignore[arg-type]
    parts = [_JSON, table, _PERSISTENT_PRIORITY_0]
    if correlation_id:
        flags |= _CORRELATION_ID
        parts.append(_shortstr(correlation_id))
    parts.append(_shortstr(message_id))
    parts.append(_TIMESTAMP.pack(timestamp))
    header = _HEADER_HEAD.pack(_BASIC, 0, len(body), flags) + b"".join(parts)
    frames = [_frame(_METHOD, channel, method), _frame(_HEADER, channel, header)]
    for start in range(0, len(body), max_content_size):
        frames.append(_frame(_BODY, channel, body[start : start + max_content_size]))
    return b"".join(frames)
