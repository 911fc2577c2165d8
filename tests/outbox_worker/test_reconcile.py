"""Recovery from the providers' lists: a customer who wrote while our server was down
is answered, once, by the reconciler inside the outbox worker (guarantee 10)."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from orderbot.config.settings import Settings
from outbox_worker.service import run_outbox_worker
from tests.support.customers import Customer, expected_replies
from tests.support.fake_provider import FakeChat2Desk
from tests.support.recovery import (
    FAST,
    cursor,
    fast_settings,
    poll,
    wait_cursors,
    wait_cursors_past,
    wait_passes,
)
from tests.support.roles import in_process
from tests.support.twilio import WhatsAppCustomer, post

Client = TestClient[Any, Any]
Spawn = Callable[..., Any]
HELLO = expected_replies(["Hello"])


def answered_once(fake: FakeChat2Desk, ids: list[str]) -> bool:
    return all(fake.texts_for(i) == HELLO for i in ids)


async def test_customers_who_wrote_while_the_server_was_down_get_one_reply_within_two_intervals(
    make_settings: Callable[..., Settings],
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    redis: Redis,
) -> None:
    settings = fast_settings(make_settings, reconcile_interval="2s", reconcile_lease_ttl="6s")
    async with in_process(run_outbox_worker, settings):
        await wait_cursors(redis, settings)
        chat2desk = [Customer().client_id for _ in range(8)]
        whatsapp = [WhatsAppCustomer().number for _ in range(8)]
        loop = asyncio.get_running_loop()
        for client_id in chat2desk:
            fake.customer_writes_chat2desk(client_id, "Hello")
        for number in whatsapp:
            fake.customer_writes_twilio(number, "Hello")
        written = loop.time()

        await fake.wait_for(lambda: all(fake.texts_for(i) for i in chat2desk + whatsapp))
        took = loop.time() - written
        await wait_passes(fake, 2)

    assert took <= 2 * settings.reconcile_interval.total_seconds()
    assert answered_once(fake, chat2desk + whatsapp)


async def test_a_message_that_came_by_webhook_and_is_listed_too_is_answered_once(
    make_settings: Callable[..., Settings],
    client: Client,
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    redis: Redis,
    webhook_url: Callable[[str], str],
) -> None:
    settings = fast_settings(make_settings)
    async with in_process(run_outbox_worker, settings):
        await wait_cursors(redis, settings)
        customer, whatsapp = Customer(), WhatsAppCustomer()
        listed = fake.customer_writes_chat2desk(customer.client_id, "Hello")
        webhook = customer.says("Hello", message_id=str(listed["id"]))
        assert (await client.post(webhook_url(""), json=webhook)).status == 200
        form = whatsapp.says("Hello")
        listed_form = fake.customer_writes_twilio(whatsapp.number, "Hello")
        form["MessageSid"] = listed_form["sid"]
        assert (await post(client, form)).status == 200

        await fake.wait_for(lambda: answered_once(fake, [customer.client_id, whatsapp.number]))
        await wait_cursors_past(redis, settings, [listed], [listed_form])
        await wait_passes(fake, 2)

    assert answered_once(fake, [customer.client_id, whatsapp.number])


async def test_our_own_outbound_messages_in_the_lists_cause_nothing(
    make_settings: Callable[..., Settings],
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    redis: Redis,
) -> None:
    settings = fast_settings(make_settings)
    async with in_process(run_outbox_worker, settings):
        await wait_cursors(redis, settings)
        customer, whatsapp = Customer(), WhatsAppCustomer()
        fake.bot_wrote_chat2desk(customer.client_id, "Your order is on its way")
        fake.bot_wrote_twilio(whatsapp.number, "Your order is on its way")
        # Both lists read once the second they were written in was over (no grace here).
        written = asyncio.get_running_loop().time()
        await poll(
            lambda: all(
                (calls := fake.calls_to(p)) and calls[-1].at >= written + 1.0
                for p in ("chat2desk", "twilio")
            )
        )

    assert fake.received == []


async def test_two_outbox_workers_publish_each_missed_message_once_and_hand_the_lease_over(
    spawn: Spawn,
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    redis: Redis,
    make_settings: Callable[..., Settings],
) -> None:
    cursors = fast_settings(make_settings)
    first, second = await spawn("outbox_worker", **FAST), await spawn("outbox_worker", **FAST)
    await poll(lambda: '"reconcile_lease_taken"' in first.logs() + second.logs())
    holder, other = (
        (first, second) if '"reconcile_lease_taken"' in first.logs() else (second, first)
    )
    before = (
        [fake.customer_writes_chat2desk(Customer().client_id, "Hello") for _ in range(4)],
        [fake.customer_writes_twilio(WhatsAppCustomer().number, "Hello") for _ in range(4)],
    )
    await wait_cursors_past(redis, cursors, *before)

    holder.send(signal.SIGKILL)
    await holder.wait()
    after = (
        [fake.customer_writes_chat2desk(Customer().client_id, "Hello") for _ in range(4)],
        [fake.customer_writes_twilio(WhatsAppCustomer().number, "Hello") for _ in range(4)],
    )
    await other.wait_log('"reconcile_lease_taken"')
    await wait_cursors_past(redis, cursors, *after)
    ids = [str(i["id"]) for i in before[0] + after[0]] + [i["sid"] for i in before[1] + after[1]]
    customers = [str(i["client_id"]) for i in before[0] + after[0]]
    customers += [i["from"] for i in before[1] + after[1]]
    await fake.wait_for(lambda: all(fake.texts_for(c) for c in customers))

    published = Counter(
        line["correlation_id"]
        for process in (holder, other)
        for line in map(json.loads, process.logs().splitlines())
        if line.get("event") == "reconcile_published"
    )
    assert {i: published[i] for i in ids} == {i: 1 for i in ids}
    assert answered_once(fake, customers)


def gaps_after_failures(fake: FakeChat2Desk, provider: str) -> list[float]:
    """Seconds from each failed call of `provider`'s list to the call after it."""
    calls = fake.calls_to(provider)
    return [b.at - a.at for a, b in itertools.pairwise(calls) if a.status >= 300]


async def test_a_list_that_answers_500_for_a_while_is_backed_off_and_caught_up_once(
    make_settings: Callable[..., Settings],
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    redis: Redis,
) -> None:
    settings = fast_settings(make_settings)
    async with in_process(run_outbox_worker, settings):
        await wait_cursors(redis, settings)
        fake.fail_lists("chat2desk", 500, 500, 500)
        customers = [Customer().client_id for _ in range(4)]
        listed = [fake.customer_writes_chat2desk(c, "Hello") for c in customers]
        await fake.wait_for(lambda: all(fake.texts_for(c) for c in customers), timeout=60)
        await poll(lambda: [c.status for c in fake.calls_to("chat2desk")][-1] == 200)
        await wait_passes(fake, 2)
        last = await cursor_of(redis, settings)

    interval = settings.reconcile_interval.total_seconds()
    gaps = gaps_after_failures(fake, "chat2desk")
    assert len(gaps) == 3
    assert [g >= 0.95 * interval * 2**n for n, g in enumerate(gaps)] == [True] * 3
    assert answered_once(fake, customers)
    assert last >= max(item["id"] for item in listed)


async def cursor_of(redis: Redis, settings: Settings) -> int:
    found = await cursor(redis, settings, "chat2desk")
    assert found is not None
    return int(found["last_id"])


async def test_a_list_that_answers_429_is_left_alone_for_its_retry_after_and_caught_up_once(
    make_settings: Callable[..., Settings],
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    redis: Redis,
) -> None:
    settings = fast_settings(make_settings)
    async with in_process(run_outbox_worker, settings):
        await wait_cursors(redis, settings)
        fake.fail_lists("twilio", 429, retry_after="3")
        customers = [WhatsAppCustomer().number for _ in range(4)]
        for number in customers:
            fake.customer_writes_twilio(number, "Hello")
        await fake.wait_for(lambda: all(fake.texts_for(c) for c in customers), timeout=60)
        await wait_passes(fake, 2)

    [gap] = gaps_after_failures(fake, "twilio")
    assert gap >= 3 * 0.95
    assert answered_once(fake, customers)
