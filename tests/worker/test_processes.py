"""Guarantees that only real processes can show: two workers at once (3), a worker
killed mid-step (4) and a worker asked to stop with work in flight (7) or while it
is still starting (7)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from aio_pika.abc import AbstractChannel
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from orderbot.config.settings import Settings
from orderbot.runtime.roles import role_named
from tests.support.broker_tools import depth, messages_queues
from tests.support.customers import (
    HAPPY_PATH_RU,
    Customer,
    converse,
    expected_replies,
    final_state,
    poster,
)
from tests.support.dialogs import dialog_state
from tests.support.fake_provider import FakeChat2Desk

Spawn = Callable[..., Any]
Client = TestClient[Any, Any]


async def test_concurrent_messages_of_one_client_with_two_workers_equal_a_sequential_run(
    client: Client,
    spawn: Spawn,
    fake: FakeChat2Desk,
    redis: Redis,
    settings: Settings,
    webhook_url: Callable[[str], str],
) -> None:
    workers = [await spawn("worker"), await spawn("worker")]
    for w in workers:
        await w.wait_log('"consuming"')
    customer = Customer()
    texts = ["abc"] * 20  # the first greets, the other 19 are too short to be an address

    statuses = await asyncio.gather(
        *(client.post(webhook_url(""), json=customer.says(text)) for text in texts)
    )
    async with asyncio.timeout(30):  # step_applied is logged after the state commit
        while sum(w.logs().count('"step_applied"') for w in workers) < 20:
            await asyncio.sleep(0.02)

    assert [s.status for s in statuses] == [200] * 20
    assert await dialog_state(redis, settings, customer) == final_state(texts)
    assert sorted(fake.texts_for(customer.client_id)) == sorted(expected_replies(texts))


async def test_worker_killed_mid_step_loses_nothing_and_orders_once(
    client: Client,
    spawn: Spawn,
    fake: FakeChat2Desk,
    db: asyncpg.Connection,
    webhook_url: Callable[[str], str],
) -> None:
    first = await spawn("worker")
    customer = Customer()
    await converse(poster(client, webhook_url("")), fake, customer, HAPPY_PATH_RU[:-1])

    release = fake.hold_requests()
    await client.post(webhook_url(""), json=customer.says("да"))
    await fake.wait_attempts(len(HAPPY_PATH_RU))  # the worker placed the order and is sending
    first.send(signal.SIGKILL)
    assert await first.wait() == -signal.SIGKILL
    release.set()
    fake.hold = None

    await spawn("worker")
    expected = expected_replies(HAPPY_PATH_RU)
    await fake.wait_for(lambda: len(fake.texts_for(customer.client_id)) >= len(expected))
    await client.post(webhook_url(""), json=customer.says("ещё один"))
    next_greeting = expected_replies([*HAPPY_PATH_RU, "ещё один"])[-1]
    await fake.wait_for(lambda: fake.texts_for(customer.client_id)[-1] == next_greeting)

    orders = await db.fetchval(
        "SELECT count(*) FROM orders WHERE client_id = $1", customer.client_id
    )
    assert orders == 1
    received = fake.texts_for(customer.client_id)
    # The confirmation's reply may arrive twice (sent, then the worker died before
    # its ack); it never arrives zero times, and the dialog then goes on.
    assert received[: len(expected)] == expected
    assert set(received[len(expected) : -1]) <= {expected[-1]}


async def test_sigterm_finishes_in_flight_steps_and_exits_zero(
    client: Client,
    spawn: Spawn,
    fake: FakeChat2Desk,
    amqp: AbstractChannel,
    settings: Settings,
    webhook_url: Callable[[str], str],
) -> None:
    worker = await spawn("worker")
    await worker.wait_log('"consuming"')
    customers = [Customer() for _ in range(3)]
    release = fake.hold_requests()
    for customer in customers:
        await client.post(webhook_url(""), json=customer.says("Hello"))
    await fake.wait_attempts(3)  # all three steps are in flight, waiting on the API

    worker.send(signal.SIGTERM)
    await worker.wait_log('"draining"')
    release.set()

    assert await worker.wait(timeout=20) == 0
    assert {m.client_id for m in fake.received} == {c.client_id for c in customers}
    assert await depth(amqp, messages_queues(settings)) == 0
    assert '"stopped"' in worker.logs()


async def test_sigterm_past_the_shutdown_timeout_leaves_unfinished_messages_for_redelivery(
    client: Client,
    spawn: Spawn,
    fake: FakeChat2Desk,
    webhook_url: Callable[[str], str],
) -> None:
    worker = await spawn("worker", SHUTDOWN_TIMEOUT="500ms")
    await worker.wait_log('"consuming"')
    customer = Customer()
    release = fake.hold_requests()  # the API never answers while this worker lives
    await client.post(webhook_url(""), json=customer.says("Hello"))
    await fake.wait_attempts(1)

    worker.send(signal.SIGTERM)
    assert await worker.wait(timeout=20) == 0
    release.set()
    fake.hold = None

    await spawn("worker")
    await fake.wait_for(lambda: len(fake.texts_for(customer.client_id)) >= 1)
    assert fake.texts_for(customer.client_id)[-1] == expected_replies(["Hello"])[0]


_STOPPED_WHILE_STARTING = """
import os, signal, sys, time, types

def __getattr__(name):  # the role's entry, looked up: SIGTERM before its event loop exists
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
    raise AttributeError(name)

entry = types.ModuleType("{module}")
entry.__getattr__ = __getattr__
sys.modules["{module}"] = entry
{start}
"""


@pytest.mark.parametrize(
    ("role", "start"),
    [
        ("server", "import runpy; runpy.run_module('server', run_name='__main__')"),
        ("worker", "import runpy; runpy.run_module('worker', run_name='__main__')"),
        ("outbox_worker", "import runpy; runpy.run_module('outbox_worker', run_name='__main__')"),
        ("worker", "from orderbot.cli.main import main; sys.exit(main(['worker']))"),
    ],
    ids=["python -m server", "python -m worker", "python -m outbox_worker", "orderbot worker"],
)
def test_sigterm_during_start_up_exits_zero(role: str, start: str) -> None:
    """pm2 and systemd may stop a process that is still importing: nothing is in flight
    then, and the exit must be a clean 0, not a death by signal."""
    module = role_named(role).entry_module
    code = _STOPPED_WHILE_STARTING.format(module=module, start=start)
    done = subprocess.run([sys.executable, "-c", code], timeout=20, capture_output=True)

    assert done.returncode == 0, done.stderr.decode()[-2000:]
