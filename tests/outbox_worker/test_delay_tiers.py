"""Which queue a failing reply goes to next, checked on the in-memory broker: the delay
tiers in order, a provider's Retry-After respected, and the DLQ with its reason code
once the attempts are used up. The reply order lives in the real Redis."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import orjson
from redis.asyncio import Redis

from orderbot.amqp.dead_letters import REASON_CODE, RetryStory
from orderbot.amqp.testing import InMemoryBroker, Published
from orderbot.amqp.topology import Topology
from orderbot.config.settings import Settings
from orderbot.conversation.reply_order import reply_order_for
from orderbot.delivery.outbox import hand_to_outbox
from orderbot.envelopes import Conversation, OutboundReply
from orderbot.errors import TransientSendError
from outbox_worker.retry import OutboxDelivery


class FailingSender:
    def __init__(self, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        self.tries = 0

    async def send(self, conversation: Conversation, text: str) -> None:
        self.tries += 1
        raise TransientSendError("provider down", status=503, retry_after=self.retry_after)


async def _queued_reply(broker: InMemoryBroker, redis: Redis, settings: Settings) -> Published:
    conversation = Conversation(tenant="t", provider="chat2desk", client_id=uuid.uuid4().hex)
    reply = OutboundReply(
        reply_id=f"{uuid.uuid4().hex}:0", correlation_id="c", conversation=conversation, text="hi"
    )
    order = reply_order_for(redis, settings)
    await hand_to_outbox(broker, order, reply, attempts=3, last_error="worker gave up")
    return broker.on(broker.topology.outbox)[-1]


def _delivery(
    broker: InMemoryBroker,
    redis: Redis,
    settings: Settings,
    sender: FailingSender,
    max_attempts: int = 50,
) -> OutboxDelivery:
    return OutboxDelivery(
        broker=broker,
        senders=sender,
        order=reply_order_for(redis, settings),
        delays=settings.outbox_delays,
        max_attempts=max_attempts,
        max_age=settings.outbox_max_age,
        stop=asyncio.Event(),
    )


async def test_each_failure_takes_the_next_delay_tier(settings: Settings, redis: Redis) -> None:
    broker = InMemoryBroker(Topology.from_settings(settings))
    delivery = _delivery(broker, redis, settings, FailingSender())
    message = await _queued_reply(broker, redis, settings)

    tiers = []
    for _ in range(3):
        settled = await broker.deliver(message, delivery)
        assert settled.settled == "ack"
        message = broker.published[-1]
        tiers.append(message.queue)

    delays = sorted(set(settings.outbox_delays))
    assert tiers == [broker.topology.delay_queue(d) for d in delays[:3]]
    assert RetryStory.from_headers(message.headers).attempts == 3 + 3
    assert RetryStory.from_headers(message.headers).retries == 3


async def test_a_retry_after_longer_than_the_tier_picks_a_longer_tier(
    settings: Settings, redis: Redis
) -> None:
    broker = InMemoryBroker(Topology.from_settings(settings))
    delivery = _delivery(broker, redis, settings, FailingSender(retry_after=60))

    await broker.deliver(await _queued_reply(broker, redis, settings), delivery)

    assert broker.published[-1].queue == broker.topology.delay_queue(timedelta(seconds=60))


async def test_the_last_attempt_parks_the_reply_with_its_reason_code(
    settings: Settings, redis: Redis
) -> None:
    broker = InMemoryBroker(Topology.from_settings(settings))
    delivery = _delivery(broker, redis, settings, FailingSender(), max_attempts=4)

    await broker.deliver(await _queued_reply(broker, redis, settings), delivery)

    parked = broker.on(broker.topology.dlq)
    assert len(parked) == 1
    assert parked[0].headers[REASON_CODE] == "gave_up"
    assert RetryStory.from_headers(parked[0].headers).attempts == 4
    assert orjson.loads(parked[0].body)["text"] == "hi"
