"""Dependencies that fail under a running system: the broker connection cut, the
broker or PostgreSQL down at start while the process is asked to stop."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aio_pika.abc import AbstractChannel
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from orderbot.config.settings import Settings
from tests.support.customers import Customer, converse, expected_replies, poster
from tests.support.fake_provider import FakeChat2Desk
from tests.support.processes import free_port
from tests.support.tcp_proxy import running_proxy
from worker.service import run_worker

Client = TestClient[Any, Any]


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{port}"))


async def test_worker_resumes_consuming_after_its_broker_connection_is_cut(
    client: Client,
    fake: FakeChat2Desk,
    make_settings: Callable[..., Settings],
    amqp: AbstractChannel,
    redis: Redis,
    webhook_url: Callable[[str], str],
) -> None:
    base = make_settings()
    async with running_proxy(urlsplit(base.amqp_url).port or 5672) as proxy:
        settings = make_settings(amqp_url=_via(base.amqp_url, proxy.port))
        stop = asyncio.Event()
        worker = asyncio.create_task(run_worker(settings, stop))
        customer = Customer()
        post = poster(client, webhook_url(""))
        await converse(post, fake, customer, ["Hello"])

        proxy.cut()
        await converse(post, fake, customer, ["Main street 12"])

        stop.set()
        await asyncio.wait_for(worker, 30)
    assert fake.texts_for(customer.client_id) == expected_replies(["Hello", "Main street 12"])


async def test_webhooks_are_refused_while_the_connection_is_cut_and_accepted_after(
    fake: FakeChat2Desk,
    make_settings: Callable[..., Settings],
    amqp: AbstractChannel,
    redis: Redis,
    webhook_url: Callable[[str], str],
) -> None:
    from aiohttp.test_utils import TestServer

    from server.app import create_app
    from server.keys import BROKER

    base = make_settings()
    async with running_proxy(urlsplit(base.amqp_url).port or 5672) as proxy:
        app = create_app(make_settings(amqp_url=_via(base.amqp_url, proxy.port)))
        async with TestClient(TestServer(app)) as client:
            await app[BROKER].wait_connected()
            customer = Customer()
            assert (await client.post(webhook_url(""), json=customer.says("one"))).status == 200
            proxy.cut()
            statuses: list[int] = []
            async with asyncio.timeout(30):  # 503 while down, then 200 once reconnected
                while not statuses or statuses[-1] != 200:
                    response = await client.post(webhook_url(""), json=customer.says("again"))
                    statuses.append(response.status)
    assert set(statuses) <= {200, 503}
    assert statuses[-1] == 200


async def test_sigterm_while_the_broker_is_unreachable_exits_promptly(
    spawn: Callable[..., Any],
) -> None:
    worker = await spawn("worker", AMQP_URL=f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    await worker.wait_log('"broker_connect_failed"')
    worker.send(signal.SIGTERM)
    assert await worker.wait(timeout=10) == 0


async def test_sigterm_while_postgres_is_unreachable_exits_promptly(
    spawn: Callable[..., Any],
) -> None:
    worker = await spawn("worker", DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    await worker.wait_log('"postgres_connect_failed"')
    worker.send(signal.SIGTERM)
    assert await worker.wait(timeout=10) == 0


async def test_sigterm_during_a_hanging_first_broker_connect_exits_promptly(
    spawn: Callable[..., Any], settings: Settings
) -> None:
    async with running_proxy(urlsplit(settings.amqp_url).port or 5672) as broker:
        broker.outage("blackhole")  # the AMQP handshake is never answered
        worker = await spawn(
            "worker",
            AMQP_URL=_via(settings.amqp_url, broker.port),
            DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/x",
        )
        await worker.wait_log('"postgres_connect_failed"')
        async with asyncio.timeout(30):
            while broker.connections == 0:  # the first connect is under way
                await asyncio.sleep(0.02)
        worker.send(signal.SIGTERM)
        assert await worker.wait(timeout=10) == 0
