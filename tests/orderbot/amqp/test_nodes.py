"""A process given several nodes connects to one that answers, and says which."""

from __future__ import annotations

from collections.abc import Callable

from aio_pika.abc import AbstractChannel
from yarl import URL

from orderbot.amqp.link import BrokerLink
from orderbot.amqp.nodes import ClusterConnection
from orderbot.config.settings import Settings
from tests.support.processes import free_port
from tests.support.services import Services


def _dead_node() -> str:
    return f"amqp://guest:guest@127.0.0.1:{free_port()}/"  # nothing listens there


async def test_a_link_skips_the_nodes_that_do_not_answer(
    make_settings: Callable[..., Settings], services: Services, amqp: AbstractChannel
) -> None:
    live = URL(services.amqp_url)
    settings = make_settings(amqp_url=f"{_dead_node()},{services.amqp_url},{_dead_node()}")

    async with BrokerLink(settings, "test") as link:
        await link.wait_connected()

        assert link.node == f"{live.host}:{live.port}"
        assert link.is_ready


async def test_each_attempt_of_a_connection_goes_to_the_next_node(services: Services) -> None:
    nodes = [URL(_dead_node()), URL(services.amqp_url)]
    connection = ClusterConnection(nodes, start=0, fail_fast="0")
    try:
        await connection.connect(timeout=5)  # the dead node first, then the live one

        assert connection.node == f"{nodes[1].host}:{nodes[1].port}"
    finally:
        await connection.close()
