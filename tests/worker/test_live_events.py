"""The worker publishes an order's creation as a live event once, and a bus that is
down or silent neither fails nor stalls the step beyond EVENTS_PUBLISH_TIMEOUT."""

from __future__ import annotations

import time
import uuid
from urllib.parse import urlsplit

import asyncpg
from redis.asyncio import Redis

from orderbot.amqp.testing import InMemoryBroker, Published
from orderbot.amqp.topology import Topology
from orderbot.config.settings import Settings
from orderbot.conversation.batch import batch_for
from orderbot.conversation.keys import Keys
from orderbot.envelopes import Conversation, InboundMessage, encode
from orderbot.events.bus import RedisEventBus
from orderbot.events.memory import InMemoryEventBus
from orderbot.runtime import metrics
from tests.support.customers import HAPPY_PATH_RU
from tests.support.services import Services
from tests.support.steps import RecordingSender, make_processor
from tests.support.tcp_proxy import running_proxy


def _messages(settings: Settings, texts: list[str]) -> tuple[str, list[Published]]:
    client_id = uuid.uuid4().hex
    queue = Topology.from_settings(settings).partitions[0]
    published = []
    for text in texts:
        inbound = InboundMessage(
            message_id=uuid.uuid4().hex,
            conversation=Conversation(
                tenant=settings.tenant, provider="webchat", client_id=client_id
            ),
            text=text,
        )
        published.append(Published(queue, encode(inbound), inbound.message_id, {}, None))
    return client_id, published


async def test_a_created_order_is_published_once_even_when_its_step_is_redelivered(
    settings: Settings, redis: Redis, pool: asyncpg.Pool
) -> None:
    bus = InMemoryEventBus()
    broker = InMemoryBroker(Topology.from_settings(settings))
    processor = make_processor(broker, settings, redis, pool, sender=RecordingSender(), events=bus)
    client_id, messages = _messages(settings, HAPPY_PATH_RU)
    for message in [*messages, messages[-1]]:  # the confirmation, delivered twice
        await broker.deliver(message, processor)
    (event,) = bus.published
    order_id = await pool.fetchval("SELECT id FROM orders WHERE client_id = $1", client_id)
    assert (event.tenant, event.kind) == (settings.tenant, "order")
    assert event.data == {
        "order_id": order_id,
        "status": "CONFIRMED",
        "previous": None,
        "client_id": client_id,
        "provider": "webchat",
    }


async def test_a_bus_that_answers_nothing_costs_a_step_at_most_its_timeout(
    settings: Settings, redis: Redis, pool: asyncpg.Pool, services: Services
) -> None:
    async with running_proxy(urlsplit(services.redis_url).port or 6379) as proxy:
        proxy.outage("blackhole")
        silent = Redis(host="127.0.0.1", port=proxy.port, socket_timeout=60)
        bus = RedisEventBus(
            silent,
            Keys(settings.redis_key_prefix).events,
            commands=batch_for(silent),
            max_length=100,
            publish_timeout=0.2,
        )
        broker = InMemoryBroker(Topology.from_settings(settings))
        sender = RecordingSender()
        processor = make_processor(broker, settings, redis, pool, sender=sender, events=bus)
        client_id, messages = _messages(settings, HAPPY_PATH_RU)
        dropped = metrics.EVENTS_DROPPED.labels(kind="order")._value.get()
        for message in messages[:-1]:
            await broker.deliver(message, processor)
        started = time.monotonic()
        await broker.deliver(messages[-1], processor)  # the step that places the order
        elapsed = time.monotonic() - started
        await silent.aclose()
    assert await pool.fetchval("SELECT count(*) FROM orders WHERE client_id = $1", client_id) == 1
    assert len(sender.sent) >= len(HAPPY_PATH_RU)  # every step answered, the last one too
    assert metrics.EVENTS_DROPPED.labels(kind="order")._value.get() == dropped + 1
    assert elapsed < 5  # the publish gave up after 0.2 s; the step did not wait on it


async def test_a_hand_off_is_published_as_a_conversation_event(
    settings: Settings, redis: Redis, pool: asyncpg.Pool
) -> None:
    bus = InMemoryEventBus()
    broker = InMemoryBroker(Topology.from_settings(settings))
    processor = make_processor(broker, settings, redis, pool, sender=RecordingSender(), events=bus)
    client_id, (message,) = _messages(settings, ["оператор"])
    await broker.deliver(message, processor)
    (event,) = bus.published
    assert (event.kind, event.data) == (
        "conversation",
        {"client_id": client_id, "provider": "webchat", "state": "handed_off", "why": "asked"},
    )
