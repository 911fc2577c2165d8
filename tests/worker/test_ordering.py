"""A customer's messages are applied in the order the broker accepted them, by any
number of workers, through a worker killed or stopped and a worker added meanwhile.

The scenario that broke per-customer order before the partitions: each customer sends
the whole dialog in one burst, 5 ms apart, to three workers, while the provider takes
0.3 s to answer each reply."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from orderbot.config.settings import Settings
from tests.support.application_order import out_of_order, wait_applied
from tests.support.customers import HAPPY_PATH_RU, Customer
from tests.support.fake_provider import FakeChat2Desk
from tests.support.processes import OrderbotProcess

Spawn = Callable[..., Any]
Client = TestClient[Any, Any]
TYPING = 0.005  # seconds between a customer's messages in a burst


async def _workers(spawn: Spawn, count: int) -> list[OrderbotProcess]:
    workers = [await spawn("worker") for _ in range(count)]
    for worker in workers:
        await worker.wait_log('"consuming"')
    return workers


async def _burst(client: Client, url: str, customer: Customer, texts: list[str]) -> list[str]:
    """Post each text as soon as the previous one was accepted; the accepted ids."""
    accepted = []
    for text in texts:
        body = customer.says(text)
        response = await client.post(url, json=body)
        assert response.status == 200
        accepted.append(str(body["message_id"]))
        await asyncio.sleep(TYPING)
    return accepted


async def _orders(db: asyncpg.Connection, customers: list[Customer]) -> list[tuple[Any, ...]]:
    rows = await db.fetch(
        "SELECT client_id, delivery_address, client_phone, quantity FROM orders"
        " WHERE client_id = ANY($1) ORDER BY client_id",
        [c.client_id for c in customers],
    )
    return [tuple(row) for row in rows]


def _as_written(customers: list[Customer]) -> list[tuple[Any, ...]]:
    return sorted((c.client_id, HAPPY_PATH_RU[1], "+996555123456", 3) for c in customers)


async def _dialogs(
    client: Client,
    url: str,
    customers: list[Customer],
    meanwhile: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> dict[str, list[str]]:
    side: asyncio.Task[None] | None = None
    if meanwhile is not None:
        side = asyncio.create_task(meanwhile())
    accepted = await asyncio.gather(*(_burst(client, url, c, HAPPY_PATH_RU) for c in customers))
    if side is not None:
        await side
    return {c.client_id: ids for c, ids in zip(customers, accepted, strict=True)}


async def test_whole_dialogs_in_one_burst_through_three_workers_end_in_their_order(
    client: Client,
    spawn: Spawn,
    fake: FakeChat2Desk,
    db: asyncpg.Connection,
    redis: Redis,
    settings: Settings,
    webhook_url: Callable[[str], str],
) -> None:
    fake.latency = 0.3
    await _workers(spawn, 3)
    customers = [Customer() for _ in range(12)]

    accepted = await _dialogs(client, webhook_url(""), customers)
    turns = await wait_applied(redis, settings, accepted)

    assert await _orders(db, customers) == _as_written(customers)
    assert out_of_order(accepted, turns) == {}


async def test_whole_dialogs_end_in_their_order_when_a_worker_is_killed_midway(
    client: Client,
    spawn: Spawn,
    fake: FakeChat2Desk,
    db: asyncpg.Connection,
    redis: Redis,
    settings: Settings,
    webhook_url: Callable[[str], str],
) -> None:
    fake.latency = 0.3
    workers = await _workers(spawn, 3)
    customers = [Customer() for _ in range(12)]

    async def kill_one_midway() -> None:
        await fake.wait_attempts(12)  # the first replies are on their way
        workers[0].send(signal.SIGKILL)

    accepted = await _dialogs(client, webhook_url(""), customers, kill_one_midway)
    turns = await wait_applied(redis, settings, accepted)

    assert await _orders(db, customers) == _as_written(customers)
    assert out_of_order(accepted, turns) == {}
    assert await workers[0].wait(timeout=10) == -signal.SIGKILL


async def test_whole_dialogs_end_in_their_order_when_a_worker_joins_and_one_stops(
    client: Client,
    spawn: Spawn,
    fake: FakeChat2Desk,
    db: asyncpg.Connection,
    redis: Redis,
    settings: Settings,
    webhook_url: Callable[[str], str],
) -> None:
    fake.latency = 0.3
    workers = await _workers(spawn, 3)
    customers = [Customer() for _ in range(12)]
    joined: list[OrderbotProcess] = []

    async def join_one_and_stop_one() -> None:
        await fake.wait_attempts(12)
        joined.append(await spawn("worker"))
        workers[1].send(signal.SIGTERM)

    accepted = await _dialogs(client, webhook_url(""), customers, join_one_and_stop_one)
    turns = await wait_applied(redis, settings, accepted)

    assert await _orders(db, customers) == _as_written(customers)
    assert out_of_order(accepted, turns) == {}
    assert await workers[1].wait(timeout=20) == 0
    assert joined


async def test_fifty_customers_of_twenty_numbered_messages_are_applied_in_accepted_order(
    client: Client,
    spawn: Spawn,
    fake: FakeChat2Desk,
    redis: Redis,
    settings: Settings,
    webhook_url: Callable[[str], str],
) -> None:
    fake.latency = 0.02
    workers = await _workers(spawn, 3)
    customers = [Customer() for _ in range(50)]
    texts = [str(n) for n in range(1, 21)]  # the first greets, the rest are no address

    bursts = [_burst(client, webhook_url(""), c, texts) for c in customers]
    accepted = dict(
        zip((c.client_id for c in customers), await asyncio.gather(*bursts), strict=True)
    )
    turns = await wait_applied(redis, settings, accepted, timeout=120)

    assert out_of_order(accepted, turns) == {}
    assert all('"step_applied"' in w.logs() for w in workers), "all three workers took part"
