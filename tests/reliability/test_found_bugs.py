"""Regression tests for what the reliability scenarios and the fuzzer found, each reduced
to the one fault that shows it, deterministically.

Each failed before its fix (1: the null id got a 500; 2: the release hung; 3: the
customer got the greeting twice; 4: the consumer's process died; 5: the process never
connected; 6: a valid webhook got a 500; 7: a reply went out twice) and passes with it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import pytest
import structlog.testing
from aio_pika.abc import AbstractChannel
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from orderbot.amqp.consumer import Consumer, Delivery
from orderbot.amqp.link import BrokerLink
from orderbot.config.settings import Settings
from orderbot.conversation.batch import RedisBatch
from orderbot.conversation.locks import ClientLocks
from orderbot.conversation.reply_order import reply_order_for
from orderbot.delivery.outbox import hand_to_outbox
from orderbot.envelopes import Conversation, OutboundReply
from orderbot.runtime.resources import open_redis
from tests.support.broker_tools import publish_raw
from tests.support.credentials import WEBHOOK_TOKEN
from tests.support.customers import Customer, expected_replies
from tests.support.fake_provider import FakeChat2Desk
from tests.support.processes import free_port
from tests.support.reliability.chaos_provider import ChaosChat2Desk
from tests.support.reliability.faults import close_broker_connections_of, rabbitmqctl_usable
from tests.support.reliability.load import AppliedWatcher, Load
from tests.support.reliability.system import System
from tests.support.services import Services


@pytest.mark.parametrize("field", ["channel_id", "dialog_id"])
async def test_a_client_message_with_a_null_optional_id_is_queued(
    client: TestClient[Any, Any], amqp: AbstractChannel, field: str
) -> None:
    body = {**Customer().says("Hello"), field: None}

    response = await client.post(f"/webhook/chat2desk/{WEBHOOK_TOKEN}", json=body)

    assert (response.status, await response.json()) == (200, {"status": "queued"})


async def test_releasing_a_customer_lock_while_its_lease_is_being_renewed_returns(
    settings: Settings, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race, made certain: the lock is released in the very loop iteration in which
    # the renewer's command has been written but its send has not returned yet.
    renewal_sent = asyncio.Event()
    drain = asyncio.StreamWriter.drain

    async def drain_and_tell(writer: asyncio.StreamWriter) -> None:
        await drain(writer)
        renewal_sent.set()

    monkeypatch.setattr(asyncio.StreamWriter, "drain", drain_and_tell)
    async with open_redis(settings) as client:  # the processes' client: socket timeouts on
        locks = ClientLocks(client, settings.redis_key_prefix, timeout=0.03)
        async with asyncio.timeout(5):
            async with locks.hold("customer"):
                renewal_sent.clear()
                await renewal_sent.wait()


async def test_a_step_cut_by_a_broker_side_close_does_not_send_its_reply_twice(
    spawn: Callable[..., Any],
    system_env: dict[str, str],
    provider: ChaosChat2Desk,
    redis: Redis,
    amqp: AbstractChannel,
    settings: Settings,
) -> None:
    assert await rabbitmqctl_usable(), "the broker-side close needs rabbitmqctl on the broker"
    env = {**system_env, "SEND_TIMEOUT": "60s"}  # a held answer is not a failed send here
    system = System(spawn=spawn, env=env, http_port=free_port(), worker_count=1)
    await system.start()
    watcher = AppliedWatcher(redis, settings.redis_key_prefix, settings.tenant)
    url = f"{system.base_url}/webhook/chat2desk/{WEBHOOK_TOKEN}"
    async with Load(url, watcher, provider, random.Random(0)) as load:
        customer = load.new_shopper()
        provider.held_until = asyncio.Event()  # the reply is on its way while the broker closes
        sent = asyncio.create_task(load.say(customer, "Hello"))
        await provider.wait_for(lambda: provider.requests == 1, timeout=30)
        [worker] = system.workers
        amqp_port = urlsplit(settings.amqp_url).port or 5672
        _, closed = await close_broker_connections_of([worker.pid], amqp_port)
        assert closed == 1
        await worker.wait_log('"consumer_channel_lost"')
        provider.held_until.set()
        provider.held_until = None
        assert await sent, "the message must be applied after the worker reconnected"
        assert await load.say(customer, "Main street 12")
        await provider.wait_for(lambda: len(provider.texts_for(customer.client_id)) >= 2, 30)
    exits = await system.stop_all()

    assert [e.status for e in exits] == [0, 0, 0]
    assert provider.texts_for(customer.client_id) == expected_replies(["Hello", "Main street 12"])
    # The cut step's ack on the dead channel is skipped, not a failed handler.
    assert '"settle_skipped_channel_closed"' in worker.logs()
    assert '"handler_failed"' not in worker.logs()


async def test_a_consumer_the_broker_refuses_at_first_keeps_trying_instead_of_dying(
    settings: Settings, amqp: AbstractChannel
) -> None:
    # Found when RabbitMQ refused a worker's consume with INTERNAL_ERROR: the worker
    # exited. The same refusal, made certain: the queue does not exist yet.
    late_queue = settings.queue("declared-late")
    handled = asyncio.Event()

    async def handler(message: Delivery) -> None:
        handled.set()

    stop = asyncio.Event()
    async with BrokerLink(settings, "test") as broker:
        consumer = Consumer(broker, late_queue, handler, prefetch=1, shutdown_timeout=5)
        with structlog.testing.capture_logs() as logs:
            running = asyncio.create_task(consumer.run(stop))
            async with asyncio.timeout(10):  # until the broker has refused it once
                while not running.done() and not any(e["event"] == "consume_failed" for e in logs):
                    await asyncio.sleep(0.01)
        assert not running.done(), "the consumer gave up when the broker refused it"
        await amqp.declare_queue(late_queue, durable=True)
        try:
            await publish_raw(amqp, late_queue, b"{}", message_id="late")
            await asyncio.wait_for(handled.wait(), 30)
            assert not running.done()
        finally:
            stop.set()
            await asyncio.wait_for(running, 30)
            await amqp.queue_delete(late_queue)


async def test_a_first_broker_connection_that_hangs_is_abandoned_and_made_again(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found when a server restarted on an overloaded machine never connected and never
    # said so: aio-pika's connect_robust, whose first try was cancelled, waited forever.
    # The hang, made certain: the first connect never returns; later ones work.
    connect = aio_pika.RobustConnection.connect
    tries = 0

    async def hang_the_first_time(connection: aio_pika.RobustConnection, **kwargs: Any) -> None:
        nonlocal tries
        tries += 1
        if tries == 1:
            await asyncio.Event().wait()  # never set: a connect that never returns
        await connect(connection, **kwargs)

    monkeypatch.setattr(aio_pika.RobustConnection, "connect", hang_the_first_time)
    settings = make_settings(publish_timeout="300ms")
    async with BrokerLink(settings, "test") as broker:
        assert await asyncio.wait_for(broker.wait_connected(), 20)
        assert broker.is_ready
        assert tries == 2
        channel = await broker.connection.channel()
        for name in broker.topology.all_queues:
            await channel.queue_delete(name)


@pytest.mark.parametrize("where", ["handshake", "command"])
async def test_a_redis_connection_closed_under_a_batch_is_a_connection_error(
    services: Services, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    # Found as a 500 to a valid webhook while Redis dropped its clients: on uvloop, a
    # write to a transport Redis has closed raises RuntimeError, which redis-py passes
    # on, so the webhook gate (which fails open on a Redis ConnectionError) did not
    # catch it. The same error, raised where uvloop raised it.
    closed = RuntimeError(
        "unable to perform operation on <TCPTransport closed=True>; the handler is closed"
    )

    async def connect_to_a_closed_transport(*_: object, **__: object) -> None:
        raise closed

    def write_to_a_closed_transport(*_: object, **__: object) -> None:
        raise closed

    async with Redis.from_url(services.redis_url) as client:
        batch = RedisBatch(client)
        if where == "command":
            assert await batch.call(("PING",)) == b"PONG"  # its own connection is open now
            monkeypatch.setattr(asyncio.StreamWriter, "writelines", write_to_a_closed_transport)
        else:
            monkeypatch.setattr(AbstractConnection, "connect", connect_to_a_closed_transport)

        with pytest.raises(RedisConnectionError) as raised:
            await batch.call(("PING",))

        assert raised.value.__cause__ is closed
        monkeypatch.undo()
        assert await batch.call(("PING",)) == b"PONG"  # and the next call reconnects


def _outbox_count(outcome: str) -> float:
    sample = {"queue": "outbox", "outcome": outcome}
    return REGISTRY.get_sample_value("orderbot_messages_processed_total", sample) or 0.0


def _outbox_outcomes() -> float:
    """Replies the outbox worker has finished with: sent, or found sent already."""
    return _outbox_count("sent") + _outbox_count("duplicate")


async def test_a_reply_the_outbox_gets_twice_is_sent_once(
    settings: Settings,
    redis: Redis,
    amqp: AbstractChannel,
    fake: FakeChat2Desk,
    outbox_worker: asyncio.Task[None],
) -> None:
    # Found as replies delivered twice after broker-side closes: the outbox worker sent a
    # reply, its ack was lost with the connection, and the redelivered copy was sent
    # again (a step retried after its publish makes a second copy too). Two copies of
    # one reply, the second arriving after the first was sent, made certain.
    customer = Customer()
    conversation = Conversation(
        tenant=settings.tenant, provider="chat2desk", client_id=customer.client_id
    )
    reply = OutboundReply(
        reply_id="m-1:0", correlation_id="m-1", conversation=conversation, text="Hello once"
    )
    order = reply_order_for(redis, settings)
    handled = _outbox_outcomes()
    async with BrokerLink(settings, "test") as broker:
        await broker.wait_connected()
        for copy in (1, 2):
            await hand_to_outbox(broker, order, reply, attempts=0, last_error=f"copy {copy}")
            async with asyncio.timeout(30):  # until the outbox worker has handled it
                while _outbox_outcomes() < handled + copy:
                    await asyncio.sleep(0.02)

    assert fake.texts_for(customer.client_id) == ["Hello once"]
    assert not await order.has_waiting(conversation)  # the copy holds nobody's replies back


async def test_two_copies_of_a_reply_at_the_same_time_are_sent_once(
    settings: Settings,
    redis: Redis,
    amqp: AbstractChannel,
    fake: FakeChat2Desk,
    outbox_worker: asyncio.Task[None],
) -> None:
    # Found as one reply delivered twice in the same instant after a broker-side close:
    # the copy redelivered from the dead channel and the copy republished meanwhile came
    # back together, and each found it its turn. Copy 2 arrives while copy 1 is sending.
    customer = Customer()
    conversation = Conversation(
        tenant=settings.tenant, provider="chat2desk", client_id=customer.client_id
    )
    reply = OutboundReply(
        reply_id="m-2:0", correlation_id="m-2", conversation=conversation, text="Hello once"
    )
    order = reply_order_for(redis, settings)
    handled, waited = _outbox_outcomes(), _outbox_count("waiting")
    sending = fake.hold_requests()
    async with BrokerLink(settings, "test") as broker:
        await broker.wait_connected()
        await hand_to_outbox(broker, order, reply, attempts=0, last_error="copy 1")
        await fake.wait_attempts(1)  # copy 1 is being sent
        await hand_to_outbox(broker, order, reply, attempts=0, last_error="copy 2")
        async with asyncio.timeout(10):  # copy 2 is told to wait
            while _outbox_count("waiting") <= waited:
                await asyncio.sleep(0.02)
        sending.set()
        async with asyncio.timeout(30):  # copy 1 sent; copy 2 back from its delay: sent
            while _outbox_outcomes() < handled + 2:
                await asyncio.sleep(0.02)

    assert fake.texts_for(customer.client_id) == ["Hello once"]
