"""Guarantee 6: a message that can never be processed reaches the DLQ, with its
reason, instead of looping; the consumer goes on with the rest."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from aio_pika.abc import AbstractChannel
from aiohttp.test_utils import TestClient

from orderbot.amqp.consumer import Consumer, Delivery
from orderbot.amqp.link import BrokerLink
from orderbot.config.settings import Settings
from tests.support.broker_tools import messages_queues, publish_raw, take_all, wait_depth
from tests.support.customers import Customer, converse, poster
from tests.support.fake_provider import FakeChat2Desk


async def test_unreadable_messages_are_parked_with_reason_and_the_next_is_processed(
    client: TestClient[Any, Any],
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    amqp: AbstractChannel,
    settings: Settings,
    webhook_url: Callable[[str], str],
) -> None:
    messages = messages_queues(settings)
    await publish_raw(amqp, messages, b"{not json", message_id="bad-json")
    await publish_raw(amqp, messages, orjson.dumps({"v": 99, "x": 1}), message_id="future")
    await publish_raw(amqp, messages, orjson.dumps({"v": 1, "text": 5}), message_id="bad-shape")

    await converse(poster(client, webhook_url("")), fake, Customer(), ["Hello"])
    await wait_depth(amqp, settings.queue("dlq"), 3)

    parked = {m.message_id: m for m in await take_all(amqp, settings.queue("dlq"))}
    assert set(parked) == {"bad-json", "future", "bad-shape"}
    assert parked["bad-json"].headers["x-reason"] == "InboundMessage body is not JSON"
    assert parked["future"].headers["x-reason"] == "unknown schema version 99 for InboundMessage"
    assert str(parked["bad-shape"].headers["x-reason"]).startswith("invalid InboundMessage")
    assert parked["bad-json"].body == b"{not json"  # parked as it came, for replay
    assert parked["bad-json"].headers["x-source-queue"] == settings.queue("messages")


async def test_message_that_fails_every_time_is_dead_lettered_after_the_delivery_limit(
    make_settings: Callable[..., Settings], amqp: AbstractChannel
) -> None:
    settings = make_settings(messages_delivery_limit=3)
    handled: list[bytes] = []
    attempts = 0
    good_handled = asyncio.Event()

    async def handler(message: Delivery) -> None:
        nonlocal attempts
        if message.body == b"bug":
            attempts += 1
            raise RuntimeError("a bug that raises every time")
        handled.append(message.body)
        good_handled.set()

    stop = asyncio.Event()
    async with BrokerLink(settings, "test") as broker:
        consumer = Consumer(
            broker, broker.topology.partitions[0], handler, prefetch=5, shutdown_timeout=5
        )
        running = asyncio.create_task(consumer.run(stop))
        await broker.wait_connected()
        await publish_raw(amqp, messages_queues(settings), b"bug", message_id="bug")
        await wait_depth(amqp, settings.queue("dlq"), 1)
        await publish_raw(amqp, messages_queues(settings), b"fine", message_id="fine")
        await asyncio.wait_for(good_handled.wait(), 30)
        stop.set()
        await running

    [dead] = await take_all(amqp, settings.queue("dlq"))
    assert dead.message_id == "bug"
    assert dead.headers["x-death"][0]["reason"] == "delivery_limit"  # type: ignore[index,call-overload]
    assert attempts == 4  # the first delivery and three redeliveries
    assert handled == [b"fine"]
