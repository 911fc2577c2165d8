"""The publish frames written by hand are the bytes pamqp writes for the same message."""

from __future__ import annotations

from datetime import UTC, datetime

import pamqp.frame
import pytest
from aiormq import spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from orderbot.amqp.frames import publish_frames

STAMP = 1_780_000_000


def pamqp_frames(
    channel: int,
    queue: str,
    body: bytes,
    *,
    message_id: str,
    correlation_id: str | None,
    headers: dict[str, object] | None,
    max_content_size: int,
) -> bytes:
    properties = spec.Basic.Properties(
        content_type="application/json",
        correlation_id=correlation_id,
        delivery_mode=2,
        headers=headers or {},  # type: ignore[arg-type]
        message_id=message_id,
        priority=0,
        timestamp=datetime.fromtimestamp(STAMP, UTC),
    )
    frames = [
        spec.Basic.Publish(exchange="", routing_key=queue, mandatory=True),
        ContentHeader(body_size=len(body), properties=properties),
        *(
            ContentBody(body[i : i + max_content_size])
            for i in range(0, len(body), max_content_size)
        ),
    ]
    return b"".join(pamqp.frame.marshal(f, channel) for f in frames)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("correlation_id", "headers"),
    [
        ("m-1", None),
        (None, None),
        ("m-1", {"x-attempts": 3, "x-last-error": "503 Сервис", "x-first": True}),
    ],
)
def test_the_frames_are_pamqps_for_the_same_message(
    correlation_id: str | None, headers: dict[str, object] | None
) -> None:
    body = '{"v":1,"text":"Здравствуйте"}'.encode()
    args = {"message_id": "m-1", "correlation_id": correlation_id, "headers": headers}

    ours = publish_frames(3, "p-messages", body, timestamp=STAMP, max_content_size=131_064, **args)  # type: ignore[arg-type]

    assert ours == pamqp_frames(3, "p-messages", body, max_content_size=131_064, **args)  # type: ignore[arg-type]


def test_a_body_over_the_frame_size_is_split_as_pamqp_splits_it() -> None:
    body = bytes(range(256)) * 40

    ours = publish_frames(
        1, "q", body, message_id="m", correlation_id="m", headers=None, timestamp=STAMP,
        max_content_size=4096,
    )  # fmt: skip

    assert ours == pamqp_frames(
        1, "q", body, message_id="m", correlation_id="m", headers=None, max_content_size=4096
    )


def test_a_short_string_over_255_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="255"):
        publish_frames(
            1, "q", b"{}", message_id="й" * 128, correlation_id=None, headers=None,
            timestamp=STAMP, max_content_size=4096,
        )  # fmt: skip
