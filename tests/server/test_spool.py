"""The edge spool: a valid message gets its 2xx while the broker cannot confirm it, is
published in order once the broker is back, survives the server's death, and is refused
(503) only when the spool itself is full."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aio_pika.abc import AbstractChannel
from aiohttp.test_utils import TestClient, TestServer

from orderbot.amqp.testing import InMemoryBroker
from orderbot.amqp.topology import Topology
from orderbot.config.settings import Settings
from orderbot.envelopes import InboundMessage, decode
from server.app import create_app
from server.keys import BROKER
from server.spool import Drain, EdgeSpool, Spooled
from tests.support.broker_tools import messages_queues, take_all, wait_depth
from tests.support.customers import Customer
from tests.support.processes import free_port, wait_http_ok
from tests.support.tcp_proxy import TcpProxy, running_proxy

Client = TestClient[Any, Any]


@pytest.fixture
async def broker_proxy(settings: Settings) -> AsyncIterator[TcpProxy]:
    async with running_proxy(urlsplit(settings.amqp_url).port or 5672) as proxy:
        yield proxy


def _through(settings: Settings, proxy: TcpProxy) -> str:
    parts = urlsplit(settings.amqp_url)
    return parts._replace(
        netloc=f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}"
    ).geturl()


async def _queued_ids(amqp: AbstractChannel, settings: Settings, count: int) -> list[str]:
    await wait_depth(amqp, messages_queues(settings), count)
    return [
        decode(InboundMessage, m.body).message_id
        for m in await take_all(amqp, messages_queues(settings))
    ]


async def test_a_webhook_before_the_first_broker_connection_is_spooled_not_refused(
    make_settings: Callable[..., Settings],
    amqp: AbstractChannel,
    broker_proxy: TcpProxy,
    webhook_url: Callable[[str], str],
) -> None:
    broker_proxy.outage()
    settings = make_settings(amqp_url=_through(make_settings(), broker_proxy))
    customer = Customer()
    app = create_app(settings)
    async with TestClient(TestServer(app)) as client:
        response = await client.post(
            webhook_url(""), json=customer.says("hello", message_id="first")
        )
        answer = await response.json()
        ready = await client.get("/health/ready")
        readiness = await ready.json()
        broker_proxy.restore()
        await asyncio.wait_for(app[BROKER].wait_connected(), 30)
        ids = await _queued_ids(amqp, settings, 1)

    assert response.status == 200
    assert answer == {"status": "queued"}
    assert ready.status == 503  # readiness still says the broker is not connected
    assert readiness["checks"]["broker"] != "ok"
    assert ids == ["first"]


async def test_spooled_messages_reach_the_queue_in_the_order_they_came(
    make_settings: Callable[..., Settings],
    amqp: AbstractChannel,
    broker_proxy: TcpProxy,
    webhook_url: Callable[[str], str],
) -> None:
    settings = make_settings(amqp_url=_through(make_settings(), broker_proxy), publish_timeout="1s")
    customer = Customer()
    app = create_app(settings)
    async with TestClient(TestServer(app)) as client:
        await app[BROKER].wait_connected()
        before = await client.post(webhook_url(""), json=customer.says("m", message_id="m0"))
        broker_proxy.outage()
        during = [
            await client.post(webhook_url(""), json=customer.says("m", message_id=f"m{i}"))
            for i in range(1, 6)
        ]
        broker_proxy.restore()
        # The broker may be back before the spool is empty: these queue behind it.
        after = [
            await client.post(webhook_url(""), json=customer.says("m", message_id=f"m{i}"))
            for i in range(6, 9)
        ]
        ids = await _queued_ids(amqp, settings, 9)

    assert [r.status for r in (before, *during, *after)] == [200] * 9
    assert ids == [f"m{i}" for i in range(9)]


async def test_a_full_spool_is_the_one_refusal_of_a_valid_message(
    make_settings: Callable[..., Settings],
    broker_proxy: TcpProxy,
    webhook_url: Callable[[str], str],
) -> None:
    broker_proxy.outage()
    settings = make_settings(amqp_url=_through(make_settings(), broker_proxy), spool_max_bytes=1024)
    customer = Customer()
    async with TestClient(TestServer(create_app(settings))) as client:
        statuses = [
            (await client.post(webhook_url(""), json=customer.says("x" * 200))).status
            for _ in range(6)
        ]
        metrics = await (await client.get("/metrics")).text()

    assert statuses[0] == 200
    assert statuses[-1] == 503
    assert statuses == sorted(statuses)  # once full, full: no message is skipped over
    assert 'orderbot_webhooks_rejected_total{provider="chat2desk",reason="spool_full"}' in metrics


async def test_a_new_server_drains_what_a_killed_one_left_in_the_spool(
    spawn: Callable[..., Any],
    config: dict[str, str],
    settings: Settings,
    amqp: AbstractChannel,
    broker_proxy: TcpProxy,
    tmp_path: Path,
    webhook_url: Callable[[str], str],
) -> None:
    broker_proxy.outage()
    first_port = free_port()
    first = await spawn(
        "server", HTTP_PORT=str(first_port), AMQP_URL=_through(settings, broker_proxy)
    )
    base = f"http://127.0.0.1:{first_port}"
    await wait_http_ok(f"{base}/health")
    customer = Customer()
    async with aiohttp.ClientSession() as http:
        for i in range(20):
            async with http.post(
                webhook_url(base), json=customer.says("m", message_id=f"k{i}")
            ) as r:
                assert r.status == 200
    first.send(signal.SIGKILL)
    await first.wait()

    second_port = free_port()  # another port: its own file, the dead one's is adopted
    second = await spawn("server", HTTP_PORT=str(second_port))
    await second.wait_log('"spool_adopted_drained"')
    ids = await _queued_ids(amqp, settings, 20)

    assert ids == [f"k{i}" for i in range(20)]
    assert list((tmp_path / "spool").glob(f"edge-{first_port}*")) == []


class _CountingSpool(EdgeSpool):
    """The spool, counting the drain's looks for a batch; past `most` it fails the look,
    which makes the drain wait before the next, so a drain that spins without yielding
    gives the event loop back."""

    def __init__(self, directory: Path, most: int) -> None:
        super().__init__(directory, "edge-test", max_bytes=1 << 20)
        self.looks = 0
        self._most = most

    async def next_batch(self, limit: int = 100) -> tuple[Any, list[Spooled]] | None:
        self.looks += 1
        if self.looks > self._most:
            raise RuntimeError("the drain looked for a batch too often")
        return await super().next_batch(limit)


async def test_the_drain_waits_for_a_commit_in_flight_instead_of_spinning(
    settings: Settings, tmp_path: Path
) -> None:
    spool = _CountingSpool(tmp_path, most=1000)
    await spool.open()
    broker = InMemoryBroker(Topology.from_settings(settings))
    drain = Drain(spool, broker, ready=lambda: True)
    try:
        # The put's commit is under way in aiosqlite's thread when the drain starts:
        # the spool is not empty, but nothing of it is on disk yet.
        putting = asyncio.create_task(spool.put("q", "m-1", b"{}"))
        await asyncio.sleep(0)
        draining = asyncio.create_task(drain.run())
        await asyncio.wait_for(putting, 10)
        async with asyncio.timeout(10):
            while not broker.published:
                await asyncio.sleep(0.01)
    finally:
        drain.stop()
        await asyncio.gather(draining, return_exceptions=True)
        await spool.close()

    assert [p.message_id for p in broker.published] == ["m-1"]
    assert spool.looks <= 3
