"""A consumer across a connection the broker closed: it consumes again on the new
connection, and a queue it let go before stays let go."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from aio_pika.abc import AbstractChannel

from orderbot.amqp.consumer import Consumer, Delivery
from orderbot.amqp.link import BrokerLink
from orderbot.config.settings import Settings
from tests.support.broker_tools import close_from_broker, publish_raw

BACK_WITHIN = 15.0  # seconds from the broker's close until the consumer consumes again


@pytest.fixture
def role() -> str:
    """The link's role, unique to the test: the broker knows its connection by it."""
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def broker(settings: Settings, amqp: AbstractChannel, role: str) -> AsyncIterator[BrokerLink]:
    async with BrokerLink(settings, role) as link:
        assert await asyncio.wait_for(link.wait_connected(), 20)
        yield link


class _Handled:
    def __init__(self) -> None:
        self.ids: list[str | None] = []
        self.changed = asyncio.Event()

    async def __call__(self, message: Delivery) -> None:
        self.ids.append(message.message_id)
        self.changed.set()

    async def wait_for(self, message_id: str) -> None:
        async with asyncio.timeout(BACK_WITHIN):
            while message_id not in self.ids:
                self.changed.clear()
                await self.changed.wait()


async def _consumers(amqp: AbstractChannel, queue: str) -> int:
    declared = await amqp.declare_queue(queue, passive=True)
    count = declared.declaration_result.consumer_count
    assert count is not None
    return count


async def _until_consumers(amqp: AbstractChannel, queue: str, count: int) -> None:
    async with asyncio.timeout(BACK_WITHIN):
        while await _consumers(amqp, queue) != count:
            await asyncio.sleep(0.05)


async def _reconnected(broker: BrokerLink, role: str) -> None:
    """The broker closes the link's connection; until it is back and aio-pika restored
    whatever it restores."""
    restored = asyncio.Event()
    broker.connection.reconnect_callbacks.add(lambda *_: restored.set())
    await close_from_broker(f"orderbot-{role}")
    async with asyncio.timeout(BACK_WITHIN):
        await restored.wait()


def _start(consumer: Consumer) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    return stop, asyncio.create_task(consumer.run(stop))


async def test_a_consumer_consumes_again_after_the_broker_closed_its_connection(
    broker: BrokerLink, amqp: AbstractChannel, role: str
) -> None:
    queue = broker.topology.partitions[0]
    handled = _Handled()
    consumer = Consumer(broker, queue, handled, prefetch=2, shutdown_timeout=5, hand_over=True)
    stop, task = _start(consumer)
    await _until_consumers(amqp, queue, 1)

    await _reconnected(broker, role)
    await publish_raw(amqp, queue, b"{}", message_id="after-close")

    await handled.wait_for("after-close")
    assert await _consumers(amqp, queue) == 1
    stop.set()
    await task


async def test_a_queue_handed_over_is_not_consumed_again_after_a_reconnect(
    broker: BrokerLink, amqp: AbstractChannel, role: str
) -> None:
    # The next owner of a single-active-consumer partition waits for every consumer of
    # the old owner to go: one that came back on the new connection holds it for ever.
    queue = broker.topology.partitions[0]
    handled = _Handled()
    first = Consumer(broker, queue, handled, prefetch=2, shutdown_timeout=5, hand_over=True)
    stop, task = _start(first)
    await _until_consumers(amqp, queue, 1)
    stop.set()
    await task
    await _until_consumers(amqp, queue, 0)

    await _reconnected(broker, role)

    assert await _consumers(amqp, queue) == 0
