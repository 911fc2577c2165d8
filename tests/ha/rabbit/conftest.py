"""Fixtures of the HA suite: engines clustered on this host, started by the tests.

RabbitMQ: one three-node cluster per session (a node takes many seconds to boot), on
ports of its own beside the shared broker, which stays untouched. A test that stops a
node leaves it stopped; the next test that needs the cluster whole boots it again.
The reliability suite's fixtures (the system as real processes, the chaos provider,
the Redis proxy) are reused as they are.
"""

from __future__ import annotations

import atexit
from collections.abc import AsyncIterator, Iterator

import aio_pika
import pytest
from _pytest.terminal import TerminalReporter
from aio_pika.abc import AbstractChannel

from orderbot.amqp.topology import Topology
from orderbot.config.settings import Settings
from tests.reliability.conftest import (  # noqa: F401 (fixtures, reused by name)
    amqp_proxy,
    provider,
    redis_proxy,
    rng,
    system,
    system_env,
)
from tests.support.ha.rabbit_cluster import RabbitCluster, installed, sweep
from tests.support.reliability.books import RECORDED

CLUSTER_SIZE = 3


@pytest.fixture(scope="session")
def rabbit_cluster() -> Iterator[RabbitCluster]:
    if not installed():
        pytest.fail("rabbitmq-server is not installed here: the cluster tests start its nodes")
    swept = sweep()
    if swept:
        print(f"killed {swept} RabbitMQ node(s) left by dead test runs")
    cluster = RabbitCluster.create(CLUSTER_SIZE)
    atexit.register(cluster.stop)  # a session cut short before its teardown
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        atexit.unregister(cluster.stop)


@pytest.fixture
async def whole_cluster(rabbit_cluster: RabbitCluster) -> RabbitCluster:
    """Every node up, whichever one an earlier test stopped."""
    for node in rabbit_cluster.nodes:
        if not rabbit_cluster.running(node):
            await rabbit_cluster.start_node(node)
    await rabbit_cluster.actl(rabbit_cluster.nodes[0], "await_online_nodes", str(CLUSTER_SIZE))
    return rabbit_cluster


@pytest.fixture
def config(config: dict[str, str], whole_cluster: RabbitCluster) -> dict[str, str]:
    """tests/conftest.py's settings on the cluster, with the reliability suite's longer
    outbox delays (tests/reliability/conftest.py says why)."""
    return {
        **config,
        "AMQP_URL": ",".join(whole_cluster.urls),
        "OUTBOX_DELAYS": "200ms,500ms,1s,2s",
    }


@pytest.fixture
async def amqp(whole_cluster: RabbitCluster, settings: Settings) -> AsyncIterator[AbstractChannel]:
    """The test's own channel, on the last node (the tests stop the others); deletes
    the test's queues afterwards."""
    connection = await aio_pika.connect(whole_cluster.nodes[-1].url)
    channel = await connection.channel()
    yield channel
    cleanup = await connection.channel()
    for name in Topology.from_settings(settings).all_queues:
        await cleanup.queue_delete(name)
    await connection.close()


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    if not RECORDED:
        return
    terminalreporter.section("ha books")
    for lines in RECORDED:
        for line in lines:
            terminalreporter.write_line(line)
