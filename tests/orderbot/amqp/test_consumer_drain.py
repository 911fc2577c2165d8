"""A stop or a hand-over waits for every handler before the channel is let go, also for
one whose delivery came while it waited."""

from __future__ import annotations

import asyncio

from orderbot.amqp import consumer
from tests.support.broker_tools import unconnected_consumer


class _Channel:
    is_closed = False


class _Message:
    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        self.channel = _Channel()
        self.processed = False

    async def ack(self, multiple: bool = False) -> None:
        self.processed = True


async def test_a_delivery_that_came_while_draining_is_handled_before_the_drain_ends() -> None:
    release = asyncio.Event()
    late = _Message("late")
    handled: list[str] = []
    consuming: consumer.Consumer

    async def handler(message: _Message) -> None:
        if message is late:
            for _ in range(10):  # it takes loop turns of its own, after the first is done
                await asyncio.sleep(0)
        else:
            await release.wait()
            await consuming._on_message(late)  # type: ignore[arg-type]
        handled.append(message.message_id)

    consuming = unconnected_consumer(handler, shutdown_timeout=5)
    await consuming._on_message(_Message("first"))  # type: ignore[arg-type]
    drain = asyncio.create_task(consuming._drain())
    await asyncio.sleep(0)  # the drain is waiting on the first handler
    release.set()
    async with asyncio.timeout(5):
        await drain

    assert handled == ["first", "late"]
    assert late.processed


async def test_a_delivery_that_comes_after_the_drain_is_left_for_redelivery() -> None:
    """It was on its way through aiormq's task when the last handler
    finished: the acks are being flushed and the channel closed, which requeues it."""
    handled: list[str] = []

    async def handler(message: _Message) -> None:
        handled.append(message.message_id)

    consuming = unconnected_consumer(handler, shutdown_timeout=5)
    await consuming._drain()
    late = _Message("late")
    await consuming._on_message(late)  # type: ignore[arg-type]

    assert consuming.inflight == 0
    assert handled == []
    assert not late.processed
