"""One reconcile pass against the fake providers, its cost and its dry run."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from aio_pika.abc import AbstractChannel
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from orderbot.amqp.link import BrokerLink
from orderbot.config.settings import Settings
from orderbot.recovery.reconciler import Reconciler
from orderbot.runtime.resources import open_http
from orderbot.tenancy.directory import TenantDirectory
from tests.support.customers import Customer
from tests.support.fake_provider import FakeChat2Desk
from tests.support.twilio import WhatsAppCustomer


async def test_a_pass_over_a_quiet_tenant_reads_each_list_once_and_the_webhooks_once(
    settings: Settings, fake: FakeChat2Desk, redis: Redis, amqp: AbstractChannel
) -> None:
    minute = timedelta(minutes=1)  # older than the grace: the first pass takes them
    fake.customer_writes_chat2desk(Customer().client_id, "Hello", ago=minute)
    fake.customer_writes_twilio(WhatsAppCustomer().number, "Hello", ago=minute)
    async with BrokerLink(settings, "test") as broker, open_http(settings) as session:
        await broker.wait_connected()
        reconciler = Reconciler(settings, redis, session, TenantDirectory(settings), broker)
        first = await reconciler.run_pass()  # cursors from the lookback
        lists, hooks = len(fake.list_calls), len(fake.webhook_calls)
        report = await reconciler.run_pass()

    calls = fake.list_calls[lists:]
    assert [c.provider for c in calls] == ["chat2desk", "twilio"]
    assert len(fake.webhook_calls) - hooks == 1
    assert (first.published, report.found) == (2, [])


async def test_a_dry_run_reports_a_missed_message_and_publishes_nothing(
    make_settings: object,
    settings: Settings,
    fake: FakeChat2Desk,
    redis: Redis,
    amqp: AbstractChannel,
) -> None:
    customer = Customer()
    listed = fake.customer_writes_chat2desk(customer.client_id, "Hello", ago=timedelta(minutes=1))
    async with open_http(settings) as session:
        reconciler = Reconciler(settings, redis, session, TenantDirectory(settings), None)
        report = await reconciler.run_pass(check_webhooks=False)

    assert [(f.message_id, f.client_id, f.outcome) for f in report.found] == [
        (str(listed["id"]), customer.client_id, "dry_run")
    ]
    assert await redis.keys(f"{settings.redis_key_prefix}reconcile:*") == []


async def test_a_first_pass_publishes_nothing_older_than_the_lookback(
    make_settings: Callable[..., Settings], fake: FakeChat2Desk, redis: Redis, amqp: AbstractChannel
) -> None:
    settings = make_settings(reconcile_lookback="1h")
    old, recent = Customer(), Customer()
    fake.customer_writes_chat2desk(old.client_id, "Hello", ago=timedelta(hours=2))
    fake.customer_writes_chat2desk(recent.client_id, "Hello", ago=timedelta(minutes=1))
    fake.customer_writes_twilio(WhatsAppCustomer().number, "Hello", ago=timedelta(hours=2))
    async with BrokerLink(settings, "test") as broker, open_http(settings) as session:
        await broker.wait_connected()
        reconciler = Reconciler(settings, redis, session, TenantDirectory(settings), broker)
        report = await reconciler.run_pass()

    assert [f.client_id for f in report.found] == [recent.client_id]


async def test_a_disabled_chat2desk_webhook_is_reported_and_counted(
    settings: Settings, fake: FakeChat2Desk, redis: Redis
) -> None:
    fake.add_webhook("https://bot.example.com/webhook/chat2desk/x", status="disable")
    async with open_http(settings) as session:
        reconciler = Reconciler(settings, redis, session, TenantDirectory(settings), None)
        report = await reconciler.run_pass()

    [(tenant, hook)] = report.disabled_webhooks
    assert (tenant, hook.status) == (settings.tenant, "disable")
    assert (
        REGISTRY.get_sample_value(
            "orderbot_chat2desk_webhooks_disabled", {"tenant": settings.tenant}
        )
        == 1
    )


async def test_a_walk_cut_by_the_page_bound_goes_on_in_the_next_pass_taking_each_message_once(
    make_settings: Callable[..., Settings], fake: FakeChat2Desk, redis: Redis, amqp: AbstractChannel
) -> None:
    settings = make_settings(reconcile_max_pages=1, reconcile_page_size=2)
    numbers = [WhatsAppCustomer().number for _ in range(5)]
    for n, number in enumerate(numbers):
        fake.customer_writes_twilio(number, "Hello", ago=timedelta(minutes=10 - n))
    found: list[str] = []
    async with BrokerLink(settings, "test") as broker, open_http(settings) as session:
        await broker.wait_connected()
        reconciler = Reconciler(settings, redis, session, TenantDirectory(settings), broker)
        for _ in range(4):
            report = await reconciler.run_pass(check_webhooks=False)
            found += [f.client_id for f in report.found if f.provider == "twilio"]

    assert sorted(found) == sorted(numbers)
    assert len(fake.calls_to("twilio")) == 4
