"""Declaring the topology over queues an earlier version made: the group size and the
classic type of old are kept, any other difference still stops the process."""

from __future__ import annotations

from collections.abc import Callable

import aiormq
import pytest
from aio_pika.abc import AbstractChannel
from pamqp.common import FieldTable

from orderbot.amqp.topology import GROUP_SIZE, Topology, declare_topology, queue_arguments
from orderbot.config.settings import Settings


def _created(topology: Topology, name: str) -> FieldTable:
    return dict(queue_arguments(topology))[name]


async def test_every_quorum_queue_is_created_with_the_group_size_setting(
    make_settings: Callable[..., Settings],
) -> None:
    topology = Topology.from_settings(make_settings(amqp_quorum_group_size=5))

    for _name, arguments in queue_arguments(topology):
        assert arguments["x-queue-type"] == "quorum"
        assert arguments[GROUP_SIZE] == 5


async def test_a_queue_made_without_a_group_size_is_declared_as_it_is(
    settings: Settings, amqp: AbstractChannel
) -> None:
    topology = Topology.from_settings(settings)
    old = {k: v for k, v in _created(topology, topology.outbox).items() if k != GROUP_SIZE}
    await amqp.declare_queue(topology.outbox, durable=True, arguments=old)

    await declare_topology(amqp, topology)

    assert not amqp.is_closed


async def test_a_queue_made_with_another_group_size_keeps_it(
    settings: Settings, amqp: AbstractChannel
) -> None:
    topology = Topology.from_settings(settings)
    other = {**_created(topology, topology.partitions[0]), GROUP_SIZE: 7}
    await amqp.declare_queue(topology.partitions[0], durable=True, arguments=other)

    await declare_topology(amqp, topology)

    assert not amqp.is_closed


async def test_a_classic_dlq_of_old_stays_classic(
    settings: Settings, amqp: AbstractChannel
) -> None:
    topology = Topology.from_settings(settings)
    classic: FieldTable = {"x-queue-type": "classic"}
    await amqp.declare_queue(topology.dlq, durable=True, arguments=classic)

    await declare_topology(amqp, topology)

    assert not amqp.is_closed


async def test_another_difference_still_refuses_the_declaration(
    settings: Settings, amqp: AbstractChannel
) -> None:
    topology = Topology.from_settings(settings)
    old = {**_created(topology, topology.outbox), "x-max-length": 7}
    old.pop(GROUP_SIZE)
    await amqp.declare_queue(topology.outbox, durable=True, arguments=old)

    with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed, match="x-max-length"):
        await declare_topology(amqp, topology)
