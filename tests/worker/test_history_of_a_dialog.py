"""The history of a whole dialog is right however its steps ran: after a worker SIGKILLed
mid-step (the redelivered step writes what the dead one could not), and after a provider
outage that the outbox healed (every reply ends `sent`). One row per customer message,
one per reply, none twice."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from orderbot.config.settings import Settings
from tests.support.customers import HAPPY_PATH_RU, Customer, converse, expected_replies, poster
from tests.support.fake_provider import FakeChat2Desk
from tests.support.history import wait_rows

Spawn = Callable[..., Any]
Client = TestClient[Any, Any]


@pytest.fixture
def config(config: dict[str, str], namespace: str) -> dict[str, str]:
    return {**config, "TENANT": f"tenant-{namespace}"}


def _whole(customer: Customer, texts: list[str]) -> Callable[[list[dict[str, Any]]], bool]:
    replies = len(expected_replies(texts))

    def done(rows: list[dict[str, Any]]) -> bool:
        inbound = [r for r in rows if r["direction"] == "in"]
        sent = [r for r in rows if r["direction"] == "out" and r["status"] == "sent"]
        return len(inbound) >= len(texts) and len(sent) >= replies

    return done


def _assert_one_row_each(rows: list[dict[str, Any]], customer: Customer, texts: list[str]) -> None:
    inbound = [r for r in rows if r["direction"] == "in"]
    outbound = [r for r in rows if r["direction"] == "out"]
    assert [r["text"] for r in inbound] == texts
    assert len({r["message_key"] for r in inbound}) == len(texts)
    assert sorted(r["text"] for r in outbound) == sorted(expected_replies(texts))
    assert len({r["message_key"] for r in outbound}) == len(outbound)
    assert {r["status"] for r in outbound} == {"sent"}
    assert {r["client_id"] for r in rows} == {customer.client_id}


async def test_the_history_of_a_dialog_is_whole_after_a_worker_is_killed_mid_step(
    client: Client,
    spawn: Spawn,
    fake: FakeChat2Desk,
    db: asyncpg.Connection,
    settings: Settings,
    webhook_url: Callable[[str], str],
) -> None:
    first = await spawn("worker")
    customer = Customer()
    await converse(poster(client, webhook_url("")), fake, customer, HAPPY_PATH_RU[:-1])

    release = fake.hold_requests()
    await client.post(webhook_url(""), json=customer.says(HAPPY_PATH_RU[-1]))
    await fake.wait_attempts(len(HAPPY_PATH_RU))  # the order is placed, its reply in flight
    first.send(signal.SIGKILL)
    assert await first.wait() == -signal.SIGKILL
    release.set()
    fake.hold = None

    await spawn("worker")
    texts = list(HAPPY_PATH_RU)
    rows = await wait_rows(db, settings.tenant, _whole(customer, texts))
    _assert_one_row_each(rows, customer, texts)


async def test_the_history_of_a_dialog_is_whole_after_an_outage_the_outbox_healed(
    client: Client,
    worker: Any,
    outbox_worker: Any,
    fake: FakeChat2Desk,
    db: asyncpg.Connection,
    settings: Settings,
    webhook_url: Callable[[str], str],
) -> None:
    customer = Customer()
    send = poster(client, webhook_url(""))
    texts = list(HAPPY_PATH_RU[:3])
    fake.fail_always(503)
    for text in texts:
        assert await send(customer.says(text)) == 200
    await wait_rows(
        db,
        settings.tenant,
        lambda rows: (
            sum(r["direction"] == "in" for r in rows) == len(texts)
            and any(r["status"] in ("queued", "failed") for r in rows)
        ),
    )
    fake.recover()
    rows = await wait_rows(db, settings.tenant, _whole(customer, texts))
    _assert_one_row_each(rows, customer, texts)
