"""At info a step leaves one line: `step_applied`, with the dialog's step and how many
replies went out (a reply's id is the step's message id and its index). The default
level is info, and a line per reply doubled the worker's log."""

from __future__ import annotations

import uuid

import asyncpg
from redis.asyncio import Redis
from structlog.testing import capture_logs

from orderbot.amqp.testing import InMemoryBroker, Published
from orderbot.amqp.topology import Topology
from orderbot.config.settings import Settings
from orderbot.envelopes import Conversation, InboundMessage, encode
from tests.support.steps import RecordingSender, make_processor

_SHOWN = {"info", "warning", "error", "critical"}


async def test_a_step_that_sends_its_replies_logs_one_line_at_info(
    settings: Settings, redis: Redis, pool: asyncpg.Pool
) -> None:
    inbound = InboundMessage(
        message_id=f"m-{uuid.uuid4().hex}",
        conversation=Conversation(
            tenant="default", provider="chat2desk", client_id=uuid.uuid4().hex
        ),
        text="Привет",
    )
    broker = InMemoryBroker(Topology.from_settings(settings))
    queue = broker.topology.partitions[0]
    message = Published(queue, encode(inbound), inbound.message_id, {}, None)
    sender = RecordingSender()

    with capture_logs() as logs:
        await broker.deliver(message, make_processor(broker, settings, redis, pool, sender=sender))

    shown = [entry for entry in logs if entry["log_level"] in _SHOWN]
    assert sender.sent, "the greeting went out"
    assert [entry["event"] for entry in shown] == ["step_applied"]
    assert shown[0]["replies_sent"] == len(sender.sent)
