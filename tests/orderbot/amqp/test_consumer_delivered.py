"""A delivery as the consumer hands it to a handler: what it reads of aiormq's message,
and a settle that goes once."""

from __future__ import annotations

import pytest
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec
from pamqp.header import ContentHeader

from orderbot.amqp.consumer import Delivered


class _Channel:
    is_closed = False

    def __init__(self) -> None:
        self.frames: list[tuple[str, int, bool]] = []

    async def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        self.frames.append(("ack", delivery_tag, multiple))

    async def basic_nack(
        self, delivery_tag: int, multiple: bool = False, requeue: bool = True
    ) -> None:
        self.frames.append(("nack", delivery_tag, requeue))


def _delivered(channel: _Channel, **properties: object) -> Delivered:
    return Delivered(
        DeliveredMessage(
            delivery=spec.Basic.Deliver(consumer_tag="c", delivery_tag=7),
            header=ContentHeader(properties=spec.Basic.Properties(**properties)),  # type: ignore[arg-type]
            body=b'{"text": "hi"}',
            channel=channel,  # type: ignore[arg-type]
        )
    )


def test_a_delivery_reads_its_body_headers_and_ids() -> None:
    message = _delivered(
        _Channel(), headers={"x-attempts": 2}, message_id="m-1", correlation_id="c-1"
    )

    assert message.body == b'{"text": "hi"}'
    assert message.headers == {"x-attempts": 2}
    assert (message.message_id, message.correlation_id, message.delivery_tag) == ("m-1", "c-1", 7)


def test_a_delivery_without_headers_reads_none() -> None:
    assert _delivered(_Channel()).headers == {}


async def test_a_delivery_is_settled_once() -> None:
    channel = _Channel()
    message = _delivered(channel, message_id="m-1")
    await message.ack()

    with pytest.raises(RuntimeError, match="settled already"):
        await message.nack(requeue=True)
    assert channel.frames == [("ack", 7, False)]
    assert message.processed
