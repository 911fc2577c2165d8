"""`orderbot messages repartition`: customer messages left in a queue that is no longer
a partition reach their customer's partition, none lost, each customer's in order."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from aio_pika.abc import AbstractChannel
from pamqp.common import FieldTable

from orderbot.amqp.topology import Topology
from orderbot.config.settings import Settings
from orderbot.envelopes import Conversation, InboundMessage, decode, encode
from tests.support.broker_tools import depth, publish_raw, take_all
from tests.support.processes import orderbot_cli

# The unpartitioned queue as deployments before partitioning declared it.
OLD_QUEUE_ARGUMENTS: FieldTable = {
    "x-queue-type": "quorum",
    "x-delivery-limit": 20,
    "x-max-length": 100_000,
    "x-overflow": "reject-publish",
}


@contextlib.asynccontextmanager
async def queues(amqp: AbstractChannel, names: list[str]) -> AsyncIterator[None]:
    """Queues of another deployment's making, deleted after the test whatever happens."""
    for name in names:
        arguments: FieldTable = dict(OLD_QUEUE_ARGUMENTS)
        if name[-1].isdigit():
            arguments["x-single-active-consumer"] = True
        await amqp.declare_queue(name, durable=True, arguments=arguments)
    try:
        yield
    finally:
        for name in names:
            await amqp.queue_delete(name)


def _messages(customers: int, each: int) -> list[InboundMessage]:
    return [
        InboundMessage(
            message_id=f"c{c}-{n}",
            conversation=Conversation(tenant="default", provider="chat2desk", client_id=f"c{c}"),
            text=f"message {n}",
        )
        for n in range(1, each + 1)
        for c in range(customers)
    ]


async def test_messages_of_the_unpartitioned_queue_move_to_their_customers_partitions(
    config: dict[str, str], settings: Settings, amqp: AbstractChannel, tmp_path: Path
) -> None:
    topology = Topology.from_settings(settings)
    old = settings.queue("messages")
    waiting = _messages(customers=6, each=5)
    async with queues(amqp, [old]):
        for message in waiting:
            await publish_raw(amqp, old, encode(message), message_id=message.message_id)

        status, stdout, stderr = await orderbot_cli(
            "messages", "repartition", env=config, cwd=tmp_path
        )

        assert status == 0, stderr
        assert f"{old}: moved 30 message(s)" in stdout
        assert await depth(amqp, old) == 0
    for partition in topology.partitions:
        moved = [decode(InboundMessage, m.body) for m in await take_all(amqp, partition)]
        assert all(topology.messages_for(m.conversation.key) == partition for m in moved)
        for customer in {m.conversation.client_id for m in moved}:
            theirs = [m.message_id for m in moved if m.conversation.client_id == customer]
            assert theirs == [f"{customer}-{n}" for n in range(1, 6)]


async def test_partitions_past_the_count_are_emptied_into_the_current_ones(
    config: dict[str, str], settings: Settings, amqp: AbstractChannel, tmp_path: Path
) -> None:
    topology = Topology.from_settings(settings)
    extra = [f"{topology.messages}.{i}" for i in range(len(topology.partitions), 6)]
    waiting = _messages(customers=3, each=2)
    async with queues(amqp, extra):
        for message in waiting:
            await publish_raw(amqp, extra[-1], encode(message), message_id=message.message_id)

        status, stdout, stderr = await orderbot_cli(
            "messages", "repartition", env=config, cwd=tmp_path
        )

        assert status == 0, stderr
        assert "moved 6 message(s) in all" in stdout
        assert await depth(amqp, tuple(extra)) == 0
        assert await depth(amqp, topology.partitions) == 6


async def test_nothing_to_move_is_said_and_is_no_failure(
    config: dict[str, str], tmp_path: Path
) -> None:
    status, stdout, stderr = await orderbot_cli("messages", "repartition", env=config, cwd=tmp_path)

    assert status == 0, stderr
    assert stdout.strip() == "moved 0 message(s) in all"
