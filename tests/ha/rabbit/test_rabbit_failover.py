"""A process on a RabbitMQ cluster: where its queues live, and how it moves when its
node stops."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aio_pika.abc import AbstractChannel

from orderbot.amqp.consumer import Consumer, Delivery
from orderbot.amqp.link import BrokerLink
from orderbot.amqp.topology import Topology
from orderbot.config.settings import Settings
from orderbot.errors import BrokerUnavailable
from tests.support.ha.rabbit_cluster import Node, RabbitCluster

pytestmark = pytest.mark.ha

MOVE_TIMEOUT = 60.0  # seconds for a node's stop and the move to another


async def test_quorum_queues_get_a_replica_on_every_node(
    whole_cluster: RabbitCluster, settings: Settings, amqp: AbstractChannel
) -> None:
    async with BrokerLink(settings, "test") as link:
        await link.wait_connected()
    topology = Topology.from_settings(settings)
    everyone = sorted(node.name for node in whole_cluster.nodes)
    for name in (*topology.partitions, topology.outbox, topology.dlq, topology.held):
        assert sorted(await whole_cluster.members(whole_cluster.nodes[-1], name)) == everyone


async def test_the_group_size_setting_bounds_the_replicas(
    whole_cluster: RabbitCluster, make_settings: Callable[..., Settings], amqp: AbstractChannel
) -> None:
    settings = make_settings(amqp_quorum_group_size=2)
    async with BrokerLink(settings, "test") as link:
        await link.wait_connected()
    outbox = Topology.from_settings(settings).outbox
    assert len(await whole_cluster.members(whole_cluster.nodes[-1], outbox)) == 2


async def test_a_process_moves_to_another_node_when_its_node_stops_and_consumes_again(
    whole_cluster: RabbitCluster, make_settings: Callable[..., Settings], amqp: AbstractChannel
) -> None:
    first, second = whole_cluster.nodes[0], whole_cluster.nodes[1]
    settings = make_settings(amqp_url=f"{first.url},{second.url}")
    queue = Topology.from_settings(settings).outbox
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def handler(message: Delivery) -> None:
        await received.put(message.body)

    async with BrokerLink(settings, "test") as link:
        await link.wait_connected()
        consumer = Consumer(link, queue, handler, prefetch=10, shutdown_timeout=2)
        stop = asyncio.Event()
        consuming = asyncio.create_task(consumer.run(stop))
        try:
            await _publish(link, queue, b"before")
            assert await asyncio.wait_for(received.get(), MOVE_TIMEOUT) == b"before"
            on, other = (first, second) if link.node == _label(first) else (second, first)

            await whole_cluster.stop_node(on)
            # Published through the link as soon as it takes one again: on the other node.
            await _publish(link, queue, b"after")
            assert link.node == _label(other)
            assert await asyncio.wait_for(received.get(), MOVE_TIMEOUT) == b"after"
        finally:
            stop.set()
            await consuming


async def _publish(link: BrokerLink, queue: str, body: bytes) -> None:
    """Publish with confirm, trying again while the link has no node."""
    async with asyncio.timeout(MOVE_TIMEOUT):
        while True:
            try:
                await link.publish(queue, body, message_id=body.decode())
            except BrokerUnavailable:
                await asyncio.sleep(0.1)  # the link reconnects meanwhile
                continue
            return


def _label(node: Node) -> str:
    return f"127.0.0.1:{node.amqp_port}"
