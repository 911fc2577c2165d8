"""One customer's messages are applied in the order they were delivered, also when a
step has to wait out a dependency: the step is run again in place, holding the
customer's turn, and the customer's next message waits behind it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

import asyncpg
from redis.asyncio import Redis

from dialog import Step
from orderbot.amqp.testing import InMemoryBroker, Published
from orderbot.amqp.topology import Topology
from orderbot.config.settings import Settings
from orderbot.conversation.dialog_store import Begun, DialogStore
from orderbot.envelopes import Conversation, InboundMessage, encode
from tests.support.customers import Customer
from tests.support.dialogs import dialog_state
from tests.support.steps import RecordingSender, make_processor


class FirstBeginFails(DialogStore):
    """Redis drops the connection the first time `flaky`'s step begins."""

    def __init__(self, redis: Redis, prefix: str, flaky: str) -> None:
        super().__init__(redis, prefix, state_ttl=timedelta(hours=1), dedupe_ttl=timedelta(hours=1))
        self._flaky = flaky
        self.failed = asyncio.Event()

    def begin(
        self, message: InboundMessage, *, per_minute: int | None = None
    ) -> Callable[[str, str, int], Awaitable[Begun | None]]:
        take = super().begin(message, per_minute=per_minute)
        if message.message_id != self._flaky or self.failed.is_set():
            return take

        async def failing(key: str, token: str, lease_ms: int) -> Begun | None:
            self.failed.set()
            raise ConnectionError("Redis closed the connection")

        return failing


async def test_a_step_waiting_out_a_dependency_is_not_overtaken_by_the_next_message(
    settings: Settings, redis: Redis, pool: asyncpg.Pool
) -> None:
    customer = Customer()
    conversation = Conversation(
        tenant=settings.tenant, provider="chat2desk", client_id=customer.client_id
    )
    texts = ["Привет", "ул. Киевская 95, кв 12"]
    inbound = [
        InboundMessage(message_id=uuid.uuid4().hex, conversation=conversation, text=text)
        for text in texts
    ]
    topology = Topology.from_settings(settings)
    broker = InMemoryBroker(topology)
    dialogs = FirstBeginFails(redis, settings.redis_key_prefix, flaky=inbound[0].message_id)
    sender = RecordingSender()
    processor = make_processor(broker, settings, redis, pool, sender=sender, dialogs=dialogs)
    queue = topology.messages_for(conversation.key)

    await asyncio.gather(
        *(
            broker.deliver(Published(queue, encode(m), m.message_id, {}, None), processor)
            for m in inbound
        )
    )

    assert dialogs.failed.is_set()
    state = await dialog_state(redis, settings, customer)
    assert state.step is Step.WAITING_PHONE  # greeted first, then the address: as written
    assert state.address == texts[1]
    assert state.turns == 2
