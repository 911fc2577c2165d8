"""Replies that cannot be sent now: retried through the outbox with growing delays,
in order per customer, and parked in the DLQ with their story when they never can
be sent (guarantee 5)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from orderbot.amqp.topology import Topology, declare_topology
from orderbot.config.settings import Settings
from orderbot.conversation.reply_order import SEND, SENT, reply_order_for
from orderbot.delivery.senders import Senders
from orderbot.envelopes import Conversation, OutboundReply, decode, encode
from outbox_worker.service import run_outbox_worker
from tests.support.broker_tools import depth, publish_raw, take_all, wait_depth
from tests.support.customers import Customer, converse, expected_replies, poster
from tests.support.dialogs import dialog_state, envelope
from tests.support.fake_provider import FakeChat2Desk
from tests.support.processes import orderbot_cli
from tests.support.roles import in_process

Client = TestClient[Any, Any]
Spawn = Callable[..., Any]


async def queues_empty(amqp: AbstractChannel, settings: Settings, within: float = 30) -> bool:
    """Whether every queue drains within `within` seconds: a copy of a reply that was sent
    meanwhile may still wait out its delay tier before the outbox sees it is done."""
    topology = Topology.from_settings(settings)
    names = [*topology.partitions, topology.outbox, *(name for name, _ in topology.delay_tiers)]
    try:
        async with asyncio.timeout(within):
            while not all([await depth(amqp, name) == 0 for name in names]):
                await asyncio.sleep(0.1)  # a poll of the broker's counts
    except TimeoutError:
        return False
    return True


async def parked_of(
    amqp: AbstractChannel, settings: Settings, customers: list[Customer]
) -> list[str]:
    """The DLQ's replies to these customers (the DLQ is emptied). The session's database is
    shared, and the relay tells this tenant's news left pending by another test: that may
    give up here too, and is not ours."""
    ours = {c.client_id for c in customers}
    parked = await take_all(amqp, settings.queue("dlq"))
    replies = [decode(OutboundReply, m.body) for m in parked]
    return [r.reply_id for r in replies if r.conversation.client_id in ours]


async def wait_turns(
    redis: Redis, settings: Settings, customers: list[Customer], turns: int
) -> None:
    """Until every customer's dialog has applied `turns` messages (the steps are done)."""
    async with asyncio.timeout(60):
        for customer in customers:
            while True:
                try:
                    if (await dialog_state(redis, settings, customer)).turns >= turns:
                        break
                except AssertionError:
                    pass
                await asyncio.sleep(0.02)


async def test_outage_replies_all_arrive_after_recovery_in_order_per_customer(
    client: Client,
    worker: asyncio.Task[None],
    outbox_worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    amqp: AbstractChannel,
    redis: Redis,
    settings: Settings,
    webhook_url: Callable[[str], str],
) -> None:
    customers = [Customer() for _ in range(50)]
    texts = ["Hello", "Main street 12", "+996555123456"]
    post = poster(client, webhook_url(""))
    await asyncio.gather(*(converse(post, fake, c, texts[:1]) for c in customers))

    fake.fail_always(500)
    for customer in customers:
        for text in texts[1:]:
            assert await post(customer.says(text)) == 200
    await wait_turns(redis, settings, customers, turns=3)
    assert await parked_of(amqp, settings, customers) == []
    fake.recover()

    await fake.wait_for(
        lambda: all(len(fake.texts_for(c.client_id)) >= 3 for c in customers), timeout=60
    )
    expected = expected_replies(texts)
    assert all(fake.texts_for(c.client_id) == expected for c in customers)
    assert await queues_empty(amqp, settings)
    assert await parked_of(amqp, settings, customers) == []


async def test_reply_that_always_fails_is_parked_after_exactly_max_attempts(
    make_settings: Callable[..., Settings],
    spawn: Spawn,
    client: Client,
    fake: FakeChat2Desk,
    amqp: AbstractChannel,
    webhook_url: Callable[[str], str],
) -> None:
    settings = make_settings()
    await spawn("worker")
    await spawn("outbox_worker", OUTBOX_MAX_ATTEMPTS="7")
    fake.fail_always(503)
    customer = Customer()
    await client.post(webhook_url(""), json=customer.says("Hello"))

    await wait_depth(amqp, settings.queue("dlq"), 1)
    [parked] = await take_all(amqp, settings.queue("dlq"))
    headers = parked.headers
    assert len([a for a in fake.attempts if a.client_id == customer.client_id]) == 7
    assert headers["x-reason"] == "gave up after 7 attempts"
    assert headers["x-attempts"] == 7
    assert "503" in str(headers["x-last-error"])
    assert headers["x-first-failure"]
    assert headers["x-client"] == customer.client_id
    assert headers["x-tenant"] == "default"
    assert await queues_empty(amqp, settings)


async def test_reply_older_than_max_age_is_parked(
    spawn: Spawn,
    client: Client,
    fake: FakeChat2Desk,
    amqp: AbstractChannel,
    settings: Settings,
    webhook_url: Callable[[str], str],
) -> None:
    await spawn("worker")
    await spawn("outbox_worker", OUTBOX_MAX_AGE="300ms", OUTBOX_MAX_ATTEMPTS="1000")
    fake.fail_always(500)
    await client.post(webhook_url(""), json=Customer().says("Hello"))

    await wait_depth(amqp, settings.queue("dlq"), 1)
    [parked] = await take_all(amqp, settings.queue("dlq"))
    assert str(parked.headers["x-reason"]).endswith("(OUTBOX_MAX_AGE)")
    attempts = parked.headers["x-attempts"]
    assert isinstance(attempts, int)
    assert 3 < attempts < 1000


async def test_permanent_refusal_is_parked_after_one_attempt(
    client: Client,
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    amqp: AbstractChannel,
    settings: Settings,
    webhook_url: Callable[[str], str],
) -> None:
    fake.fail_always(400)
    customer = Customer()
    await client.post(webhook_url(""), json=customer.says("Hello"))

    await wait_depth(amqp, settings.queue("dlq"), 1)
    [parked] = await take_all(amqp, settings.queue("dlq"))
    assert len(fake.attempts) == 1
    assert str(parked.headers["x-reason"]).startswith(
        "permanent send error: chat2desk answered 400"
    )
    assert parked.headers["x-attempts"] == 1
    assert await depth(amqp, settings.queue("outbox")) == 0


async def test_outbox_worker_killed_during_retries_loses_nothing(
    spawn: Spawn,
    client: Client,
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    amqp: AbstractChannel,
    settings: Settings,
    webhook_url: Callable[[str], str],
) -> None:
    customers = [Customer() for _ in range(10)]
    fake.fail_always(500)
    first = await spawn("outbox_worker")
    for customer in customers:
        await client.post(webhook_url(""), json=customer.says("Hello"))
    await first.wait_log('"reply_retry_scheduled"')
    first.send(signal.SIGKILL)
    await first.wait()
    fake.recover()

    await spawn("outbox_worker")
    await fake.wait_for(lambda: all(fake.texts_for(c.client_id) for c in customers), timeout=60)
    assert all(fake.texts_for(c.client_id)[0] == expected_replies(["Hello"])[0] for c in customers)
    assert await depth(amqp, settings.queue("dlq")) == 0


async def _dlq_cli(config: dict[str, str], cwd: Path, *args: str) -> str:
    status, stdout, stderr = await orderbot_cli("dlq", *args, env=config, cwd=cwd)
    assert status == 0, stderr
    return stdout


async def test_dlq_list_shows_what_an_operator_needs_and_replay_delivers(
    client: Client,
    worker: asyncio.Task[None],
    outbox_worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    amqp: AbstractChannel,
    settings: Settings,
    config: dict[str, str],
    tmp_path: Path,
    webhook_url: Callable[[str], str],
) -> None:
    fake.fail_always(400)
    customer = Customer()
    await client.post(webhook_url(""), json=customer.says("Hello"))
    await wait_depth(amqp, settings.queue("dlq"), 1)

    [listed] = [
        json.loads(line)
        for line in (await _dlq_cli(config, tmp_path, "list", "--json")).splitlines()
    ]
    table = await _dlq_cli(config, tmp_path, "list")
    assert listed["client"] == customer.client_id
    assert listed["tenant"] == "default"
    assert listed["attempts"] == 1
    assert listed["reason"].startswith("permanent send error")
    assert "400" in listed["last_error"]
    assert listed["age_seconds"] >= 0
    assert customer.client_id in table
    assert "permanent send error" in table
    assert await depth(amqp, settings.queue("dlq")) == 1  # listing leaves them parked

    fake.recover()
    assert (await _dlq_cli(config, tmp_path, "replay", "--all")).strip() == "replayed 1 message(s)"
    await fake.wait_for(lambda: len(fake.texts_for(customer.client_id)) == 1)
    assert fake.texts_for(customer.client_id) == expected_replies(["Hello"])
    assert await depth(amqp, settings.queue("dlq")) == 0


async def test_dlq_replay_all_replays_each_parked_message_once_even_if_it_fails_again(
    client: Client,
    worker: asyncio.Task[None],
    outbox_worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    amqp: AbstractChannel,
    settings: Settings,
    config: dict[str, str],
    tmp_path: Path,
    webhook_url: Callable[[str], str],
) -> None:
    fake.fail_always(400)
    for customer in [Customer() for _ in range(3)]:
        await client.post(webhook_url(""), json=customer.says("Hello"))
    await wait_depth(amqp, settings.queue("dlq"), 3)

    report = await _dlq_cli(config, tmp_path, "replay", "--all")
    await wait_depth(amqp, settings.queue("dlq"), 3)  # refused again, parked again

    assert report.strip() == "replayed 3 message(s)"
    assert len(fake.attempts) == 6


async def test_dlq_replay_of_a_customer_message_goes_back_to_the_dialog(
    client: Client,
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    amqp: AbstractChannel,
    settings: Settings,
    config: dict[str, str],
    tmp_path: Path,
) -> None:
    customer = Customer()
    body = envelope(settings, customer, "Hello", "m-1")
    await publish_raw(
        amqp,
        settings.queue("dlq"),
        body,
        message_id="m-1",
        headers={"x-source-queue": f"{settings.queue('messages')}.0", "x-reason": "a bug"},
    )

    assert (
        await _dlq_cli(config, tmp_path, "replay", "--id", "m-1")
    ).strip() == "replayed 1 message(s)"
    await fake.wait_for(lambda: len(fake.texts_for(customer.client_id)) == 1)
    assert fake.texts_for(customer.client_id) == expected_replies(["Hello"])


async def test_dlq_replay_puts_a_customer_message_in_its_customers_partition(
    client: Client,
    amqp: AbstractChannel,
    settings: Settings,
    config: dict[str, str],
    tmp_path: Path,
) -> None:
    topology = Topology.from_settings(settings)
    customer = Customer()
    body = envelope(settings, customer, "Hello", "m-1")
    parked_from = f"{topology.messages}.9"  # a partition of a former, larger count
    await publish_raw(
        amqp,
        settings.queue("dlq"),
        body,
        message_id="m-1",
        headers={"x-source-queue": parked_from, "x-reason": "a bug"},
    )

    await _dlq_cli(config, tmp_path, "replay", "--id", "m-1")

    home = topology.messages_for(f"{settings.tenant}:chat2desk:{customer.client_id}")
    [replayed] = await take_all(amqp, home)
    assert replayed.message_id == "m-1"


async def test_dlq_purge_needs_yes_and_then_empties_it(
    amqp: AbstractChannel,
    settings: Settings,
    config: dict[str, str],
    tmp_path: Path,
    client: Client,
) -> None:
    await publish_raw(amqp, settings.queue("dlq"), b"{}", message_id="x")
    refused, _, _ = await orderbot_cli("dlq", "purge", env=config, cwd=tmp_path)
    assert refused == 2
    assert await depth(amqp, settings.queue("dlq")) == 1
    assert (await _dlq_cli(config, tmp_path, "purge", "--yes")).strip() == "purged 1 message(s)"
    assert await depth(amqp, settings.queue("dlq")) == 0


async def test_send_rate_limit_holds_across_processes(
    spawn: Spawn, client: Client, fake: FakeChat2Desk, webhook_url: Callable[[str], str]
) -> None:
    per_minute = 120  # 2 per second, bursts of 2
    limit = {"CHAT2DESK_RATE_LIMIT": str(per_minute)}
    processes = [
        await spawn("worker", **limit),
        await spawn("worker", **limit),
        await spawn("outbox_worker", **limit),
    ]
    for process in processes:
        await process.wait_log('"consuming"')
    customers = [Customer() for _ in range(40)]
    await asyncio.gather(*(client.post(webhook_url(""), json=c.says("Hello")) for c in customers))
    await fake.wait_attempts(14, timeout=60)

    arrivals = [attempt.at for attempt in fake.attempts]
    window = 5.0
    allowed = 2 + per_minute / 60 * window
    busiest = max(sum(1 for t in arrivals if start <= t < start + window) for start in arrivals)
    assert busiest <= allowed
    senders = [p for p in processes if _sent_a_reply(p.logs())]
    assert len(senders) >= 2, "the limit must have been shared by more than one process"


def _sent_a_reply(logs: str) -> bool:
    """A worker says so in its step's line, the outbox worker in a line per reply."""
    return '"reply_sent"' in logs or re.search(r'"replies_sent":\s*[1-9]', logs) is not None


async def test_a_reply_whose_send_fails_with_a_bug_every_time_ends_in_the_dlq(
    make_settings: Callable[..., Settings],
    amqp: AbstractChannel,
    redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not transient, not a refusal: the quorum queue's delivery limit parks it. A claim
    left by the failed try made each redelivery wait and be republished with a fresh
    delivery count, so the reply circled for ever and held back the customer's others."""
    settings = make_settings(messages_delivery_limit=3)
    tries = 0

    async def bug(self: Senders, conversation: Conversation, text: str) -> None:
        nonlocal tries
        tries += 1
        raise ValueError("a bug that raises every time")

    monkeypatch.setattr(Senders, "send", bug)
    await declare_topology(amqp, Topology.from_settings(settings))
    reply = OutboundReply(
        reply_id="m1:0",
        correlation_id="m1",
        conversation=Conversation(tenant=settings.tenant, provider="chat2desk", client_id="c1"),
        text="hi",
    )

    async with in_process(run_outbox_worker, settings):
        await publish_raw(amqp, settings.queue("outbox"), encode(reply), message_id="m1:0")
        await wait_depth(amqp, settings.queue("dlq"), 1)

    assert tries == 1 + settings.messages_delivery_limit  # the first try, then redeliveries
    assert await queues_empty(amqp, settings)


async def test_a_reply_counts_as_sent_only_for_the_text_that_went_out(
    redis: Redis, settings: Settings
) -> None:
    """A step replayed on a newer state (its lock was lost) can say something else under
    the same reply id; that answer must still reach the customer, the same one not twice."""
    order = reply_order_for(redis, settings)
    conversation = Conversation(tenant=settings.tenant, provider="chat2desk", client_id="c1")

    first = await order.turn(conversation, "m1:0", "Your address?", "delivery-1")
    await order.done(conversation, "m1:0", sent="Your address?")
    same = await order.turn(conversation, "m1:0", "Your address?", "delivery-2")
    other = await order.turn(conversation, "m1:0", "Your phone?", "delivery-3")

    assert (first, same, other) == (SEND, SENT, SEND)
