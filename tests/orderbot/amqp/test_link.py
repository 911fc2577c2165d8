"""BrokerLink's confirmed publishes against the real broker: written together, each
still answered by its own confirm, nack or return."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import aiormq
import pytest
from aio_pika.abc import AbstractChannel

from orderbot.amqp.link import BrokerLink
from orderbot.config.settings import Settings
from orderbot.errors import BrokerUnavailable
from tests.support.broker_tools import cancel_channel_reader, take_all


@pytest.fixture
async def broker(settings: Settings, amqp: AbstractChannel) -> AsyncIterator[BrokerLink]:
    async with BrokerLink(settings, "test") as link:
        assert await asyncio.wait_for(link.wait_connected(), 20)
        yield link


async def test_publishes_of_one_turn_are_all_confirmed_and_queued_in_order(
    broker: BrokerLink, amqp: AbstractChannel
) -> None:
    queue = broker.topology.partitions[0]
    await asyncio.gather(
        *(broker.publish(queue, b'{"n":%d}' % i, message_id=f"m-{i}") for i in range(300))
    )

    taken = await take_all(amqp, queue)

    assert [m.message_id for m in taken] == [f"m-{i}" for i in range(300)]
    assert taken[7].body == b'{"n":7}'
    assert (taken[7].delivery_mode, taken[7].content_type) == (2, "application/json")


async def test_headers_and_correlation_id_reach_the_queue(
    broker: BrokerLink, amqp: AbstractChannel
) -> None:
    queue = broker.topology.outbox
    await broker.publish(
        queue, b"{}", message_id="r-1", correlation_id="c-1", headers={"x-attempts": 2}
    )

    (message,) = await take_all(amqp, queue)

    assert message.correlation_id == "c-1"
    assert message.headers["x-attempts"] == 2


async def test_an_unroutable_publish_is_unavailable_and_its_neighbours_confirmed(
    broker: BrokerLink, amqp: AbstractChannel
) -> None:
    queue = broker.topology.partitions[0]
    results = await asyncio.gather(
        broker.publish(queue, b"{}", message_id="before"),
        broker.publish(f"{queue}-nobody", b"{}", message_id="lost"),
        broker.publish(queue, b"{}", message_id="after"),
        return_exceptions=True,
    )

    assert [type(r) for r in results] == [type(None), BrokerUnavailable, type(None)]
    assert [m.message_id for m in await take_all(amqp, queue)] == ["before", "after"]


async def test_a_publish_to_a_full_queue_is_nacked_as_unavailable_and_the_link_goes_on(
    make_settings: Callable[..., Settings], amqp: AbstractChannel
) -> None:
    settings = make_settings(messages_max_length=2)
    async with BrokerLink(settings, "test") as broker:
        assert await asyncio.wait_for(broker.wait_connected(), 20)
        queue = broker.topology.partitions[0]
        accepted = await publish_until_refused(broker, queue, most=4)
        await publish_when_ready(broker, broker.topology.outbox, "elsewhere")

    # RabbitMQ 3.10's quorum queue takes one message past the limit before it refuses.
    assert len(accepted) in (2, 3)
    assert [m.message_id for m in await take_all(amqp, queue)] == accepted
    assert [m.message_id for m in await take_all(amqp, broker.topology.outbox)] == ["elsewhere"]


async def publish_until_refused(broker: BrokerLink, queue: str, most: int) -> list[str]:
    """Publish one at a time (the quorum queue counts what it has applied) until one is
    refused as unavailable; the ids accepted before it."""
    accepted: list[str] = []
    for i in range(most):
        try:
            await broker.publish(queue, b"{}", message_id=f"m-{i}")
        except BrokerUnavailable as exc:
            if "Nack" not in str(exc):
                raise
            return accepted
        accepted.append(f"m-{i}")
    raise AssertionError(f"{most} publishes to a queue of 2 were all confirmed")


async def test_a_nacked_publish_renews_the_channel(
    make_settings: Callable[..., Settings], amqp: AbstractChannel
) -> None:
    """The broker may go on refusing a queue on the channel it first refused it on
    (amqp/link.py says when); a new channel asks again."""
    settings = make_settings(messages_max_length=2)
    async with BrokerLink(settings, "test") as broker:
        assert await asyncio.wait_for(broker.wait_connected(), 20)
        queue = broker.topology.partitions[0]
        nacked = await _underlay(broker)
        accepted = await publish_until_refused(broker, queue, most=4)
        await _until(lambda: nacked.is_closed and broker.is_ready)
        assert [m.message_id for m in await take_all(amqp, queue)] == accepted

        await publish_when_ready(broker, queue, "after")

        assert await _underlay(broker) is not nacked
    assert [m.message_id for m in await take_all(amqp, queue)] == ["after"]


async def publish_when_ready(broker: BrokerLink, queue: str, message_id: str) -> None:
    """Publish once the link is ready, retrying while it renews its channel."""
    async with asyncio.timeout(20):
        while True:
            try:
                await broker.publish(queue, b"{}", message_id=message_id)
                return
            except BrokerUnavailable:
                await asyncio.sleep(0.05)  # the renewal is under way


async def test_a_publish_whose_channel_dies_before_its_confirm_is_unavailable_not_cancelled(
    broker: BrokerLink,
) -> None:
    queue = broker.topology.partitions[0]
    underlay = await _underlay(broker)
    publishing = asyncio.create_task(broker.publish(queue, b"{}", message_id="in-flight"))
    await _until(lambda: bool(underlay.confirmations))  # written, not confirmed yet

    cancel_channel_reader(underlay)
    done, _ = await asyncio.wait({publishing}, timeout=10)

    assert done, "the publish never settled"
    assert not publishing.cancelled()
    assert isinstance(publishing.exception(), BrokerUnavailable)


async def test_a_channel_lost_while_its_connection_lives_is_reopened(
    broker: BrokerLink, amqp: AbstractChannel
) -> None:
    queue = broker.topology.partitions[0]
    cancel_channel_reader(await _underlay(broker))
    await _until(lambda: not broker.is_ready)

    async with asyncio.timeout(20):
        while True:
            try:
                await broker.publish(queue, b"{}", message_id="after")
                break
            except BrokerUnavailable:
                await asyncio.sleep(0.05)

    assert [m.message_id for m in await take_all(amqp, queue)] == ["after"]


async def _until(condition: Callable[[], bool], within: float = 10) -> None:
    async with asyncio.timeout(within):
        while not condition():
            await asyncio.sleep(0)


async def _underlay(broker: BrokerLink) -> aiormq.Channel:
    """aiormq's channel under the link's: the one whose reader a teardown cancels."""
    assert broker._channel is not None
    underlay = await broker._channel.get_underlay_channel()
    assert isinstance(underlay, aiormq.Channel)
    return underlay
