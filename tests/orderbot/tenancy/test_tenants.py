"""Multi-tenancy: many businesses in one deployment, each with its own
credentials, limits, dialogs and orders, changed at run time without a restart.

Every test makes its own tenants (slugs, tokens and numbers unique to it) in the
session database, so it never meets another test's rows.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aio_pika
import aiohttp
import asyncpg
import pytest
import structlog
from aio_pika.abc import AbstractChannel
from aiohttp.test_utils import TestClient
from pydantic import ValidationError
from twilio.request_validator import RequestValidator

from dialog import DialogState, PhoneRule, advance
from orderbot.amqp.topology import Topology
from orderbot.config.secret_box import SecretBox, UnreadableSecret, new_key
from orderbot.config.settings import ConfigError, Settings, load_settings
from orderbot.envelopes import Conversation, InboundMessage, OutboundReply, encode
from orderbot.orders.migrate import migrate
from orderbot.runtime.logging import configure_logging
from orderbot.tenancy import store as tenant_store
from orderbot.tenancy.directory import (
    CHANNEL,
    TenantDirectory,
    open_tenant_directory,
    operator_key_hash,
    webhook_token_hash,
)
from server.keys import TENANTS
from tests.support.broker_tools import depth, messages_queues, publish_raw, take_all, wait_depth
from tests.support.credentials import PUBLIC_BASE_URL, TWILIO_TOKEN
from tests.support.customers import HAPPY_PATH_RU, Customer, expected_replies
from tests.support.fake_provider import FakeChat2Desk, SentMessage
from tests.support.operator_tools import bearer, insert_order
from tests.support.processes import free_port, orderbot_cli, wait_http_ok
from tests.support.queue_sweep import new_namespace
from tests.support.run_cleanup import DATABASE_PREFIX
from tests.support.services import Services
from worker.service import tenant_rules
from worker.step import customer_budget

Client = TestClient[Any, Any]
Spawn = Callable[..., Any]
TWILIO_URL = f"{PUBLIC_BASE_URL}/webhook/twilio"


@dataclass(frozen=True)
class Business:
    """A tenant as the test knows it: its plaintext secrets."""

    slug: str
    webhook_token: str
    api_token: str
    twilio_sid: str
    twilio_token: str
    number: str
    operator_key: str

    def changes(self, **overrides: Any) -> tenant_store.TenantChanges:
        values: dict[str, Any] = {
            "name": f"Business {self.slug}",
            "chat2desk_api_token": self.api_token,
            "chat2desk_webhook_token": self.webhook_token,
            "twilio_account_sid": self.twilio_sid,
            "twilio_auth_token": self.twilio_token,
            "twilio_whatsapp_from": self.number,
            "operator_api_key": self.operator_key,
        }
        return tenant_store.TenantChanges(**{**values, **overrides})

    def sent(self, fake: FakeChat2Desk) -> list[SentMessage]:
        """What the fake API received with this tenant's own Chat2Desk token."""
        return [m for m in fake.received if m.headers.get("Authorization") == self.api_token]


def new_business(label: str) -> Business:
    tag = uuid.uuid4().hex
    return Business(
        slug=f"{label}-{tag[:10]}",
        webhook_token=f"wh-{label}-{tag}",
        api_token=f"api-{label}-{tag}",
        twilio_sid=f"AC{tag}",
        twilio_token=f"tw-{label}-{tag}",
        number=f"whatsapp:+1{uuid.uuid4().int % 10**10:010d}",
        operator_key=f"ops-{label}-{tag}",
    )


@pytest.fixture
def master_key() -> str:
    return new_key()


@pytest.fixture
def config(config: dict[str, str], master_key: str) -> dict[str, str]:
    """The shared test environment, with tenants read from the table. The fallback
    reload is off (an hour) unless a test turns it on: a change seen sooner was
    announced by NOTIFY."""
    return {**config, "ORDERBOT_MASTER_KEY": master_key, "TENANTS_RELOAD_INTERVAL": "1h"}


@pytest.fixture
def box(master_key: str) -> SecretBox:
    return SecretBox(master_key)


@pytest.fixture
def issued() -> list[Business]:
    """Every business (with its secrets) this test made up."""
    return []


@pytest.fixture(autouse=True)
def no_secret_in_captured_output(
    issued: list[Business],
    master_key: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> Iterator[None]:
    """Guarantee 9 for every test here: no log line of the in-process server, worker,
    outbox worker or tenant directory holds a tenant's secret or the master key."""
    yield
    captured = capsys.readouterr()
    output = captured.out + captured.err + caplog.text
    for business in issued:
        for secret in (
            business.api_token,
            business.webhook_token,
            business.twilio_token,
            business.operator_key,
        ):
            assert secret not in output
    assert master_key not in output


@pytest.fixture
def issue(issued: list[Business]) -> Callable[[str], Business]:
    def make(label: str) -> Business:
        business = new_business(label)
        issued.append(business)
        return business

    return make


@pytest.fixture
async def add(
    db: asyncpg.Connection, box: SecretBox, issue: Callable[[str], Business]
) -> AsyncIterator[Callable[..., Awaitable[Business]]]:
    """Create a tenant in the table (as `orderbot tenants add` does); removed afterwards."""
    added: list[str] = []

    async def create(label: str, **overrides: Any) -> Business:
        business = issue(label)
        await tenant_store.add(db, business.slug, business.changes(**overrides), box)
        added.append(business.slug)
        return business

    yield create
    await db.execute("DELETE FROM tenants WHERE slug = ANY($1::text[])", added)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15) -> None:
    """Poll a condition until it holds (a change travels through PostgreSQL)."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.02)


async def tenants_loaded(client: Client, *known: Business) -> None:
    """Until the server has read the table, with these tenants in it (NOTIFY is async)."""
    app = client.app
    assert app is not None
    directory = app[TENANTS]

    async def loaded() -> bool:
        return directory.loaded and all(directory.get(b.slug) is not None for b in known)

    await eventually(loaded)


@pytest.fixture
async def a(add: Callable[..., Awaitable[Business]]) -> Business:
    """A tenant in the table before the processes of the test start (list it first)."""
    return await add("a")


@pytest.fixture
async def disabled(add: Callable[..., Awaitable[Business]]) -> Business:
    return await add("off", active=False)


@pytest.fixture
async def b(add: Callable[..., Awaitable[Business]]) -> Business:
    return await add("b")


async def queues_declared(services: Services, settings: Settings) -> None:
    """Until the process under test has declared its queues (the last one exists): a
    message published before that would be dropped as unroutable."""
    last, _ = Topology.from_settings(settings).delay_tiers[-1]
    connection = await aio_pika.connect(services.amqp_url)
    async with connection, asyncio.timeout(30):
        while True:
            channel = await connection.channel()  # a failed passive declare closes it
            try:
                await channel.declare_queue(last, passive=True)
                return
            except aio_pika.exceptions.ChannelNotFoundEntity:
                await asyncio.sleep(0.02)


def chat2desk_url(business: Business, *, own_url: bool) -> str:
    if own_url:
        return f"/webhook/chat2desk/{business.slug}/{business.webhook_token}"
    return f"/webhook/chat2desk/{business.webhook_token}"


def twilio_form(business: Business, sender: str, text: str) -> dict[str, str]:
    return {
        "MessageSid": f"SM{uuid.uuid4().hex}",
        "AccountSid": business.twilio_sid,
        "From": sender,
        "To": business.number,
        "Body": text,
        "NumMedia": "0",
    }


def twilio_headers(form: dict[str, str], token: str) -> dict[str, str]:
    """Signed by the twilio package's own validator: the independent oracle."""
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": RequestValidator(token).compute_signature(TWILIO_URL, form),
    }


# --- Isolation -----------------------------------------------------------------------


async def test_two_tenants_with_the_same_customer_get_two_dialogs_and_two_orders(
    a: Business,
    b: Business,
    client: Client,
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    db: asyncpg.Connection,
) -> None:
    await tenants_loaded(client, a, b)
    customer = Customer()  # one phone, one client id, even the same message ids on both

    for step, text in enumerate(HAPPY_PATH_RU, start=1):
        message = customer.says(text)
        answered = len(expected_replies(HAPPY_PATH_RU[:step]))
        for business, own_url in ((a, True), (b, False)):
            response = await client.post(chat2desk_url(business, own_url=own_url), json=message)
            assert response.status == 200, await response.text()
            await fake.wait_for(lambda n=answered, t=business: len(t.sent(fake)) >= n)

    replies = expected_replies(HAPPY_PATH_RU)
    assert [m.text for m in a.sent(fake)] == replies
    assert [m.text for m in b.sent(fake)] == replies
    assert len(fake.received) == 2 * len(replies)  # nothing with another token
    rows = await db.fetch(
        "SELECT tenant, quantity FROM orders WHERE client_id = $1 ORDER BY tenant",
        customer.client_id,
    )
    assert [(r["tenant"], r["quantity"]) for r in rows] == sorted([(a.slug, 3), (b.slug, 3)])


async def test_b_token_on_a_url_is_403_and_nothing_is_queued(
    client: Client,
    amqp: AbstractChannel,
    settings: Settings,
    add: Callable[..., Awaitable[Business]],
) -> None:
    a, b = await add("a"), await add("b")
    await tenants_loaded(client, a, b)

    response = await client.post(
        f"/webhook/chat2desk/{a.slug}/{b.webhook_token}", json=Customer().says("hi")
    )

    assert response.status == 403
    assert (await response.json())["error"] == "invalid webhook token"
    assert b.webhook_token not in await response.text()
    assert await depth(amqp, messages_queues(settings)) == 0


async def test_an_unknown_tenant_url_is_404_and_an_unknown_token_403(
    client: Client, amqp: AbstractChannel, settings: Settings
) -> None:
    await tenants_loaded(client)

    unknown_slug = await client.post("/webhook/chat2desk/nobody/some-token", json={})
    unknown_token = await client.post("/webhook/chat2desk/some-token", json={})

    assert unknown_slug.status == 404
    assert unknown_token.status == 403
    assert await depth(amqp, messages_queues(settings)) == 0


async def test_a_disabled_tenant_is_refused_on_every_webhook_and_nothing_is_queued(
    client: Client,
    amqp: AbstractChannel,
    settings: Settings,
    add: Callable[..., Awaitable[Business]],
) -> None:
    business = await add("off", active=False)
    await tenants_loaded(client, business)
    form = twilio_form(business, "whatsapp:+996555000111", "hi")

    statuses = [
        (await client.post(chat2desk_url(business, own_url=own), json=Customer().says("hi"))).status
        for own in (True, False)
    ]
    twilio = await client.post(
        "/webhook/twilio",
        data=urlencode(form),
        headers=twilio_headers(form, business.twilio_token),
    )

    assert statuses == [403, 403]
    assert twilio.status == 403
    assert (await twilio.json())["error"] == "tenant disabled"
    assert await depth(amqp, messages_queues(settings)) == 0


async def test_a_tenant_sealed_with_another_key_is_answered_retry_later_not_refused(
    client: Client,
    amqp: AbstractChannel,
    settings: Settings,
    db: asyncpg.Connection,
    issue: Callable[[str], Business],
) -> None:
    """A wrong master key is an operator's mistake to fix, not a reason to lose the
    messages: a 4xx makes the provider drop them, a 503 makes it send them again."""
    business = issue("sealed")
    await tenant_store.add(db, business.slug, business.changes(), SecretBox(new_key()))
    try:
        app = client.app
        assert app is not None
        directory = app[TENANTS]

        async def seen_unreadable() -> bool:
            return bool(directory.loaded and directory.is_unreadable(business.slug))

        await eventually(seen_unreadable)  # the NOTIFY of the insert reached the server
        form = twilio_form(business, "whatsapp:+996555000111", "hi")

        chat2desk = [
            await client.post(chat2desk_url(business, own_url=own), json=Customer().says("hi"))
            for own in (True, False)
        ]
        twilio = await client.post(
            "/webhook/twilio",
            data=urlencode(form),
            headers=twilio_headers(form, business.twilio_token),
        )

        assert [r.status for r in chat2desk] == [503, 503]
        assert twilio.status == 503
        assert all(r.headers["Retry-After"] == "5" for r in [*chat2desk, twilio])
        assert await depth(amqp, messages_queues(settings)) == 0
    finally:
        await db.execute("DELETE FROM tenants WHERE slug = $1", business.slug)


async def test_a_reply_for_a_disabled_tenant_is_parked_with_the_reason(
    services: Services,
    outbox_worker: asyncio.Task[None],
    amqp: AbstractChannel,
    settings: Settings,
    fake: FakeChat2Desk,
    add: Callable[..., Awaitable[Business]],
) -> None:
    business = await add("off", active=False)
    reply = OutboundReply(
        reply_id=f"r-{uuid.uuid4().hex}",
        correlation_id="c",
        conversation=Conversation(tenant=business.slug, provider="chat2desk", client_id="42"),
        text="hello",
    )
    await queues_declared(services, settings)

    await publish_raw(amqp, settings.queue("outbox"), encode(reply), message_id=reply.reply_id)
    await wait_depth(amqp, settings.queue("dlq"), 1)

    [parked] = await take_all(amqp, settings.queue("dlq"))
    assert f"tenant '{business.slug}' is disabled" in str(parked.headers["x-reason"])
    assert fake.attempts == []


async def test_a_queued_message_of_a_since_disabled_tenant_has_its_reply_parked(
    disabled: Business,
    services: Services,
    worker: asyncio.Task[None],
    amqp: AbstractChannel,
    settings: Settings,
    fake: FakeChat2Desk,
) -> None:
    a = disabled  # queued while it was served, handled after it was disabled
    await queues_declared(services, settings)
    message = InboundMessage(
        message_id=f"m-{uuid.uuid4().hex}",
        conversation=Conversation(tenant=a.slug, provider="chat2desk", client_id="42"),
        text="Здравствуйте",
    )

    await publish_raw(amqp, messages_queues(settings), encode(message), message_id="m")
    await wait_depth(amqp, settings.queue("dlq"), 1)

    [parked] = await take_all(amqp, settings.queue("dlq"))
    assert f"tenant '{a.slug}' is disabled" in str(parked.headers["x-reason"])
    assert parked.headers["x-tenant"] == a.slug
    assert fake.attempts == []


async def test_a_tenant_without_twilio_gets_its_twilio_reply_parked_with_the_reason(
    services: Services,
    outbox_worker: asyncio.Task[None],
    amqp: AbstractChannel,
    settings: Settings,
    add: Callable[..., Awaitable[Business]],
) -> None:
    business = await add(
        "c2d", twilio_account_sid=None, twilio_auth_token=None, twilio_whatsapp_from=None
    )
    reply = OutboundReply(
        reply_id=f"r-{uuid.uuid4().hex}",
        correlation_id="c",
        conversation=Conversation(tenant=business.slug, provider="twilio", client_id="wa:+1"),
        text="hello",
    )
    await queues_declared(services, settings)

    await publish_raw(amqp, settings.queue("outbox"), encode(reply), message_id=reply.reply_id)
    await wait_depth(amqp, settings.queue("dlq"), 1)

    [parked] = await take_all(amqp, settings.queue("dlq"))
    assert "has no twilio channel" in str(parked.headers["x-reason"])


async def test_a_tenant_s_own_customer_budget_applies_to_it_alone(
    client: Client, add: Callable[..., Awaitable[Business]], settings: Settings
) -> None:
    strict, relaxed = await add("strict", webhook_rate_limit_customer=2), await add("relaxed")
    await tenants_loaded(client, strict, relaxed)
    assert client.app is not None

    budget = customer_budget(settings, client.app[TENANTS])

    assert budget(strict.slug) == 2
    assert budget(relaxed.slug) == settings.webhook_rate_limit_customer


async def test_a_tenant_s_own_phone_region_applies_to_it_alone(
    client: Client, add: Callable[..., Awaitable[Business]], settings: Settings
) -> None:
    kazakh = await add("kz", phone_region="kz", phone_regions_allowed="KG, ru")
    local = await add("local")
    await tenants_loaded(client, kazakh, local)
    assert client.app is not None

    rules = tenant_rules(settings, client.app[TENANTS])

    assert rules(kazakh.slug).phone == PhoneRule("KZ", frozenset({"KG", "RU"}))
    assert rules(local.slug).phone == PhoneRule(settings.phone_region)


async def test_a_tenant_s_own_name_and_delivery_promise_are_in_its_texts_alone(
    client: Client, add: Callable[..., Awaitable[Business]], settings: Settings
) -> None:
    plov = await add("plov", business_name="Plov House", delivery_minutes=40)
    local = await add("local")
    await tenants_loaded(client, plov, local)
    assert client.app is not None

    rules = tenant_rules(settings, client.app[TENANTS])

    assert (rules(plov.slug).business_name, rules(plov.slug).delivery_minutes) == (
        "Plov House",
        40,
    )
    assert (rules(local.slug).business_name, rules(local.slug).delivery_minutes) == (
        settings.business_name,
        settings.delivery_minutes,
    )
    greeting = advance(DialogState(), "Hello", rules(plov.slug)).replies[0]
    assert "Plov House" in greeting


def test_an_empty_business_name_is_refused_before_it_reaches_the_table() -> None:
    with pytest.raises(ValidationError):
        tenant_store.TenantChanges(business_name="")
    with pytest.raises(ValidationError):
        tenant_store.TenantChanges(delivery_minutes=0)


@pytest.fixture
async def grouped(add: Callable[..., Awaitable[Business]]) -> Business:
    return await add("grp", chat2desk_operator_group_id="777")


async def test_a_tenant_s_own_operator_group_gets_its_hand_offs_with_its_token(
    grouped: Business,
    client: Client,
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
) -> None:
    await tenants_loaded(client, grouped)
    request = Customer().says("оператор")

    response = await client.post(chat2desk_url(grouped, own_url=True), json=request)
    assert response.status == 200
    await fake.wait_for(lambda: len(fake.transfers) == 1)

    [transfer] = fake.transfers
    assert transfer.group_id == "777"
    assert transfer.authorization == grouped.api_token
    assert transfer.message_id == request["message_id"]


async def test_a_tenant_s_phone_regions_written_past_the_checks_fall_back_to_the_settings(
    client: Client,
    add: Callable[..., Awaitable[Business]],
    settings: Settings,
    db: asyncpg.Connection,
) -> None:
    broken = await add("broken")
    await db.execute(
        "UPDATE tenants SET phone_regions_allowed = '{ZZ}' WHERE slug = $1", broken.slug
    )
    assert client.app is not None
    directory = client.app[TENANTS]

    async def updated() -> bool:
        tenant = directory.get(broken.slug)
        return tenant is not None and tenant.phone_regions_allowed == ("ZZ",)

    await eventually(updated)
    rules = tenant_rules(settings, directory)

    assert rules(broken.slug).phone == PhoneRule(settings.phone_region)


def test_an_unknown_phone_region_is_refused_before_it_reaches_the_table() -> None:
    with pytest.raises(ValidationError, match="unknown phone region"):
        tenant_store.TenantChanges(phone_region="ZZ")
    with pytest.raises(ValidationError, match="unknown phone region"):
        tenant_store.TenantChanges(phone_regions_allowed="KG,ZZ")


# --- Twilio ------------------------------------------------------------------------------


async def test_twilio_routes_by_to_and_checks_that_tenant_s_own_signature(
    a: Business,
    client: Client,
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    db: asyncpg.Connection,
) -> None:
    business = a
    await tenants_loaded(client, business)
    sender = f"whatsapp:+996{uuid.uuid4().int % 10**9:09d}"
    forged = twilio_form(business, sender, "hi")
    genuine = twilio_form(business, sender, "Здравствуйте")

    refused = await client.post(
        "/webhook/twilio", data=urlencode(forged), headers=twilio_headers(forged, TWILIO_TOKEN)
    )
    accepted = await client.post(
        "/webhook/twilio",
        data=urlencode(genuine),
        headers=twilio_headers(genuine, business.twilio_token),
    )
    await fake.wait_for(lambda: len(fake.texts_for(sender)) >= 1)

    assert refused.status == 403  # signed with the settings tenant's token: not this number's
    assert accepted.status == 200
    [sent] = [m for m in fake.received if m.client_id == sender]
    assert sent.text == expected_replies(["Здравствуйте"])[0]
    assert sent.body["From"] == business.number
    assert sent.body["account"] == business.twilio_sid
    credentials = f"{business.twilio_sid}:{business.twilio_token}".encode()
    assert sent.headers["Authorization"] == "Basic " + base64.b64encode(credentials).decode()


async def test_a_twilio_message_to_an_unknown_number_is_404(
    client: Client,
    amqp: AbstractChannel,
    settings: Settings,
    issue: Callable[[str], Business],
) -> None:
    await tenants_loaded(client)
    stranger = issue("x")
    form = twilio_form(stranger, "whatsapp:+996555000222", "hi")

    response = await client.post(
        "/webhook/twilio", data=urlencode(form), headers=twilio_headers(form, stranger.twilio_token)
    )

    assert response.status == 404
    assert await depth(amqp, messages_queues(settings)) == 0


async def test_a_row_with_the_settings_tenant_s_slug_replaces_the_settings(
    make_settings: Callable[..., Settings],
    db: asyncpg.Connection,
    box: SecretBox,
    issue: Callable[[str], Business],
) -> None:
    business = issue("own")
    settings = make_settings(tenant=business.slug)
    await tenant_store.add(db, business.slug, business.changes(), box)
    try:
        async with open_tenant_directory(settings, "test") as directory:
            await eventually(lambda: _from_table(directory, business))
            tenant = directory.get(business.slug)
            by_settings_token = directory.by_webhook_token(str(settings.chat2desk_webhook_token))
    finally:
        await db.execute("DELETE FROM tenants WHERE slug = $1", business.slug)

    assert tenant is not None
    assert tenant.from_settings is False
    assert directory.by_webhook_token(business.webhook_token) == tenant
    assert by_settings_token is None


async def test_a_row_under_another_master_key_fails_closed_for_that_tenant_only(
    make_settings: Callable[..., Settings],
    db: asyncpg.Connection,
    add: Callable[..., Awaitable[Business]],
    issue: Callable[[str], Business],
) -> None:
    readable, foreign = await add("fine"), issue("foreign")
    settings = make_settings(tenant=foreign.slug)  # not even the settings stand in for it
    await tenant_store.add(db, foreign.slug, foreign.changes(), SecretBox(new_key()))
    try:
        async with open_tenant_directory(settings, "test") as directory:
            await eventually(lambda: _knows(directory, readable))
            assert directory.get(foreign.slug) is None
            assert directory.by_webhook_token(foreign.webhook_token) is None
            assert directory.by_twilio_number(foreign.number) is None
    finally:
        await db.execute("DELETE FROM tenants WHERE slug = $1", foreign.slug)


def test_without_a_master_key_the_settings_tenant_is_the_whole_directory(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(orderbot_master_key=None)
    directory = TenantDirectory(settings)

    [tenant] = directory.all()
    assert directory.loaded
    assert tenant.slug == settings.tenant
    assert tenant.twilio_credentials() is not None
    assert directory.by_twilio_number(str(settings.twilio_whatsapp_from)) == tenant


# --- Changes reach running processes -----------------------------------------------------


async def test_an_update_reaches_the_running_server_and_worker_through_notify(
    a: Business,
    client: Client,
    worker: asyncio.Task[None],
    fake: FakeChat2Desk,
    db: asyncpg.Connection,
    box: SecretBox,
) -> None:
    business = a
    await tenants_loaded(client, business)
    customer = Customer()
    new_webhook, new_api = f"wh-new-{uuid.uuid4().hex}", f"api-new-{uuid.uuid4().hex}"

    await tenant_store.update(
        db,
        business.slug,
        tenant_store.TenantChanges(
            chat2desk_webhook_token=new_webhook, chat2desk_api_token=new_api
        ),
        box,
    )

    async def new_token_works() -> bool:
        url = f"/webhook/chat2desk/{new_webhook}"
        return (await client.post(url, json=customer.says("Привет"))).status == 200

    async def replies_with_new_token() -> bool:
        """The worker follows on its own NOTIFY: a reply soon carries the new token."""
        answered = len(fake.texts_for(customer.client_id))
        assert await new_token_works()
        await fake.wait_for(lambda: len(fake.texts_for(customer.client_id)) > answered)
        return fake.received[-1].headers["Authorization"] == new_api

    await eventually(new_token_works)  # the reload interval is an hour: NOTIFY did it
    old = await client.post(chat2desk_url(business, own_url=False), json=customer.says("x"))
    await eventually(replies_with_new_token)

    assert old.status == 403
    assert business.api_token not in fake.received[-1].headers.values()


async def test_a_change_without_notify_is_read_by_the_periodic_reload(
    make_settings: Callable[..., Settings],
    amqp: AbstractChannel,
    redis: Any,
    db: asyncpg.Connection,
    box: SecretBox,
    add: Callable[..., Awaitable[Business]],
) -> None:
    from aiohttp.test_utils import TestServer

    from server.app import create_app

    business = await add("quiet", active=False)
    app = create_app(make_settings(tenants_reload_interval="200ms"))
    async with TestClient(TestServer(app)) as client:
        await tenants_loaded(client, business)
        await _update_silently(db, box, business.slug, tenant_store.TenantChanges(active=True))

        async def enabled() -> bool:
            url = chat2desk_url(business, own_url=True)
            return (await client.post(url, json=Customer().says("hi"))).status == 200

        await eventually(enabled)


async def test_a_change_while_the_listen_connection_was_lost_is_read_after_reconnecting(
    client: Client,
    database_url: str,
    db: asyncpg.Connection,
    box: SecretBox,
    add: Callable[..., Awaitable[Business]],
) -> None:
    business = await add("lost", active=False)
    await tenants_loaded(client, business)
    url = chat2desk_url(business, own_url=True)
    await _update_silently(db, box, business.slug, tenant_store.TenantChanges(active=True))
    unnoticed = await client.post(url, json=Customer().says("hi"))

    cut = await _cut_follower(db, _database_name(database_url))

    async def enabled() -> bool:
        return (await client.post(url, json=Customer().says("hi"))).status == 200

    assert unnoticed.status == 403  # no NOTIFY, and the reload interval is an hour
    assert cut == 1
    await eventually(enabled)  # read again after reconnecting


@pytest.fixture
async def own_database(services: Services) -> AsyncIterator[str]:
    """A database of this test alone (migrated), so it can shut everyone out of it."""
    name = f"{DATABASE_PREFIX}{new_namespace()}"
    url = services.database_url(name)
    await migrate(url)
    yield url
    admin = await asyncpg.connect(services.database_url("postgres"))
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


_FOLLOWER = "orderbot-tenants-server"


def _database_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


async def _cut_follower(conn: asyncpg.Connection, database: str) -> int:
    """Terminate the server's LISTEN connection to `database`; how many were cut."""
    cut: int = await conn.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = $1 AND application_name = $2",
        database,
        _FOLLOWER,
    )
    return cut


async def _shut_out(services: Services, url: str, *, shut: bool) -> int:
    """Refuse (or allow again) new connections to the database; when refusing, cut the
    server's LISTEN connection too. Returns how many connections were cut."""
    name = _database_name(url)
    admin = await asyncpg.connect(services.database_url("postgres"))
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(not shut).lower()}')
        return await _cut_follower(admin, name) if shut else 0
    finally:
        await admin.close()


@dataclass
class Followed:
    """A server following a table of its own, with one tenant in it, and the URLs of a
    token no row has and of that tenant's URL with a token not its own."""

    client: Client
    known: Business
    unknown_token: str
    rotated_token: str

    async def status(self, url: str) -> int:
        return (await self.client.post(url, json=Customer().says("hi"))).status


@pytest.fixture
async def followed(
    make_settings: Callable[..., Settings],
    amqp: AbstractChannel,
    redis: Any,
    box: SecretBox,
    issue: Callable[[str], Business],
    own_database: str,
) -> AsyncIterator[Followed]:
    from aiohttp.test_utils import TestServer

    from server.app import create_app
    from server.keys import BROKER

    known, stranger = issue("known"), issue("stranger")
    conn = await asyncpg.connect(own_database)
    try:
        await tenant_store.add(conn, known.slug, known.changes(), box)
    finally:
        await conn.close()
    app = create_app(make_settings(database_url=own_database, database_listen_url=own_database))
    async with TestClient(TestServer(app)) as client:
        await tenants_loaded(client, known)
        await asyncio.wait_for(app[BROKER].wait_connected(), 30)
        yield Followed(
            client,
            known,
            unknown_token=chat2desk_url(stranger, own_url=False),
            rotated_token=f"/webhook/chat2desk/{known.slug}/{stranger.webhook_token}",
        )


async def test_a_key_not_known_is_answered_retry_later_while_the_table_cannot_be_followed(
    services: Services, own_database: str, followed: Followed
) -> None:
    """A tenant added, or a token rotated, while the server cannot hear of it would be
    refused with a 4xx, and the provider would drop the message: while its view of
    the table may be stale, the server answers 503 instead, and serves the tenants it
    knows from the snapshot."""
    before = (
        await followed.status(followed.unknown_token),
        await followed.status(followed.rotated_token),
    )
    cut = await _shut_out(services, own_database, shut=True)

    async def retry_later() -> bool:
        return await followed.status(followed.unknown_token) == 503

    await eventually(retry_later)
    during = (
        await followed.status(followed.rotated_token),
        await followed.status(chat2desk_url(followed.known, own_url=False)),
    )
    await _shut_out(services, own_database, shut=False)

    async def refused_again() -> bool:
        return await followed.status(followed.unknown_token) == 403

    await eventually(refused_again)  # reconnected and read the table again

    assert before == (403, 403)
    assert cut == 1
    assert during == (503, 200)


async def test_unknown_keys_get_retry_later_from_the_moment_the_listen_connection_drops(
    own_database: str, followed: Followed
) -> None:
    """Even when reconnecting succeeds at once: until the table has been read again on
    the new connection, a change made in between may not be in the snapshot. The read
    is held back by a lock here, so only the lost connection itself can say so."""
    locker = await asyncpg.connect(own_database)
    try:
        async with locker.transaction():
            await locker.execute("LOCK TABLE tenants IN ACCESS EXCLUSIVE MODE")
            cut = await _cut_follower(locker, _database_name(own_database))

            async def retry_later() -> bool:
                return await followed.status(followed.unknown_token) == 503

            # Well within the re-read's own 10 s command timeout, whose failure would
            # also mark the snapshot stale.
            await eventually(retry_later, timeout=5)
        # The lock is released: the re-read completes.

        async def refused_again() -> bool:
            return await followed.status(followed.unknown_token) == 403

        await eventually(refused_again)
    finally:
        await locker.close()

    assert cut == 1


def test_a_stale_snapshot_is_trusted_again_after_the_grace(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guarantee 8's 403 for a bad token comes back when the outage outlasts the grace:
    "retry later" is for a change that may be on its way, not for a long outage."""
    from orderbot.tenancy import directory as tenants

    now = 1000.0
    monkeypatch.setattr(tenants, "monotonic", lambda: now)
    directory = TenantDirectory(settings)
    directory.mark_stale()
    during = directory.unavailable("no-such-key")
    now += tenants.STALE_GRACE + 1
    after = directory.unavailable("no-such-key")

    assert (during, after) == (True, False)


async def test_the_tenant_follower_backs_off_while_postgres_refuses_it(
    services: Services, make_settings: Callable[..., Settings], own_database: str
) -> None:
    """A connection lost in the middle of a re-read wakes the follower; that wake must
    not also cut short every backoff after it, or a refused reconnect is retried in a
    tight loop (a thousand attempts and warnings a second) for the whole outage."""
    name = _database_name(own_database)
    settings = make_settings(database_url=own_database, database_listen_url=own_database)
    admin = await asyncpg.connect(services.database_url("postgres"))
    locker = await asyncpg.connect(own_database)
    try:
        async with open_tenant_directory(settings, "server") as directory:
            await asyncio.wait_for(directory.wait_loaded(asyncio.Event()), 15)
            async with locker.transaction():
                await locker.execute("LOCK TABLE tenants IN ACCESS EXCLUSIVE MODE")
                await _execute(own_database, f"NOTIFY {CHANNEL}")  # the follower re-reads...
                await eventually(_waits_on_a_lock(admin, name))  # ...and waits for the lock
                await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                with structlog.testing.capture_logs() as logs:
                    await _cut_follower(admin, name)
                    await asyncio.sleep(2)  # a window to count attempts in, not a wait
                stale = directory.stale
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await locker.close()
        await admin.close()

    attempts = [e for e in logs if e["event"] == "tenants_follow_failed"]
    assert 3 <= len(attempts) <= 6  # backoff 0.2, 0.4, 0.8 s...: about 4 in 2 s
    assert stale


async def _execute(url: str, statement: str) -> None:
    """One statement on a connection of its own (a NOTIFY goes out at once)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def _waits_on_a_lock(admin: asyncpg.Connection, database: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        waiting: int = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 "
            "AND application_name = $2 AND wait_event_type = 'Lock'",
            database,
            _FOLLOWER,
        )
        return waiting == 1

    return check


async def _update_silently(
    db: asyncpg.Connection, box: SecretBox, slug: str, changes: tenant_store.TenantChanges
) -> None:
    """Change a row without its NOTIFY (replica mode skips this session's triggers)."""
    async with db.transaction():
        await db.execute("SET LOCAL session_replication_role = replica")
        await tenant_store.update(db, slug, changes, box)


# --- Operator API -------------------------------------------------------------------------


async def test_each_tenants_operator_key_sees_and_moves_only_its_own_orders(
    a: Business, b: Business, client: Client, db: asyncpg.Connection
) -> None:
    await tenants_loaded(client, a, b)
    ours = await insert_order(db, tenant=a.slug, client_id="42")
    theirs = await insert_order(db, tenant=b.slug, client_id="42")

    listed = await client.get("/api/orders", headers=bearer(a.operator_key))
    foreign = await client.get(f"/api/orders/{theirs}", headers=bearer(a.operator_key))
    moved = await client.post(
        f"/api/orders/{theirs}/status", json={"status": "PREPARING"}, headers=bearer(b.operator_key)
    )

    assert listed.status == 200
    assert [order["id"] for order in (await listed.json())["orders"]] == [ours]
    assert foreign.status == 404
    assert moved.status == 200, await moved.text()
    assert await db.fetchval("SELECT status FROM orders WHERE id = $1", ours) == "CONFIRMED"


async def test_a_disabled_tenants_operator_key_gets_401(
    add: Callable[..., Awaitable[Business]], client: Client
) -> None:
    business = await add("off", active=False)
    await tenants_loaded(client, business)

    response = await client.get("/api/orders", headers=bearer(business.operator_key))

    assert response.status == 401


# --- Secrets -----------------------------------------------------------------------------


async def test_credentials_in_the_table_are_unreadable_without_the_master_key(
    db: asyncpg.Connection, add: Callable[..., Awaitable[Business]]
) -> None:
    business = await add("sealed")

    row = await db.fetchrow("SELECT * FROM tenants WHERE slug = $1", business.slug)

    assert row is not None
    stored = " ".join(str(value) for value in row.values())
    for secret in (business.api_token, business.webhook_token, business.twilio_token):
        assert secret not in stored
    assert row["chat2desk_webhook_token_sha256"] == webhook_token_hash(business.webhook_token)
    with pytest.raises(UnreadableSecret):
        SecretBox(new_key()).decrypt(row["chat2desk_api_token_enc"])


def test_a_malformed_master_key_stops_the_start_with_one_line_naming_it() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(_env_file=None, orderbot_master_key="not-a-key")

    message = str(refused.value)
    assert "ORDERBOT_MASTER_KEY" in message
    assert "not-a-key" not in message
    assert "\n" not in message


async def test_no_log_line_of_any_process_contains_a_tenant_secret(
    spawn: Spawn,
    fake: FakeChat2Desk,
    amqp: AbstractChannel,
    settings: Settings,
    add: Callable[..., Awaitable[Business]],
    master_key: str,
) -> None:
    a, b = await add("loga"), await add("logb")
    port = free_port()
    processes = [
        await spawn("server", HTTP_PORT=str(port), LOG_LEVEL="debug"),
        await spawn("worker", LOG_LEVEL="debug"),
        await spawn("outbox_worker", LOG_LEVEL="debug"),
    ]
    base = f"http://127.0.0.1:{port}"
    await wait_http_ok(f"{base}/health/ready")
    async with aiohttp.ClientSession() as http:

        async def post(path: str, body: dict[str, Any]) -> int:
            async with http.post(base + path, json=body) as response:
                return response.status

        await eventually(lambda: _accepted(post, a))  # the server has read the table
        await fake.wait_for(lambda: len(a.sent(fake)) >= 1)
        fake.echo_headers_on_error = True
        fake.fail_next(401)  # b's token echoed back in the error body
        assert await post(chat2desk_url(b, own_url=False), Customer().says("hi")) == 200
        await wait_depth(amqp, settings.queue("dlq"), 1)
        assert await post(f"/webhook/chat2desk/{a.slug}/{b.webhook_token}", {}) == 403

    [parked] = await take_all(amqp, settings.queue("dlq"))
    for process in processes:
        assert await process.stop() == 0
    logs = "".join(process.logs() for process in processes)
    everything = logs + str(parked.headers)
    assert "tenants_loaded" in logs
    assert "reply_refused" in logs
    for business in (a, b):
        for secret in (business.api_token, business.webhook_token, business.twilio_token):
            assert secret not in everything
    assert master_key not in everything


async def test_secrets_of_tenants_loaded_at_run_time_are_masked_in_log_lines(
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    add: Callable[..., Awaitable[Business]],
) -> None:
    business = await add("mask")
    saved = structlog.get_config()
    handlers = logging.getLogger().handlers[:]
    try:
        configure_logging(settings, "test")  # before the tenant is known, as in a process
        async with open_tenant_directory(settings, "test") as directory:
            await eventually(lambda: _knows(directory, business))
            structlog.get_logger("t").error("oops", detail=f"token={business.api_token}")
            logging.getLogger("lib").error("url /webhook/chat2desk/%s", business.webhook_token)
    finally:
        structlog.configure(**saved)
        logging.getLogger().handlers[:] = handlers
    lines = capsys.readouterr().err

    assert "token=[redacted]" in lines
    assert "chat2desk/[redacted]" in lines
    assert business.api_token not in lines
    assert business.webhook_token not in lines


async def _knows(directory: TenantDirectory, business: Business) -> bool:
    return directory.get(business.slug) is not None


async def _from_table(directory: TenantDirectory, business: Business) -> bool:
    tenant = directory.get(business.slug)
    return tenant is not None and not tenant.from_settings


async def _accepted(post: Callable[[str, dict[str, Any]], Awaitable[int]], a: Business) -> bool:
    return await post(chat2desk_url(a, own_url=True), Customer().says("hi")) == 200


# --- The command -------------------------------------------------------------------------


async def test_cli_add_list_update_disable_and_reencrypt_round_trip(
    config: dict[str, str],
    db: asyncpg.Connection,
    master_key: str,
    tmp_path: Path,
    issue: Callable[[str], Business],
) -> None:
    business = issue("cli")
    secrets = {
        "T_API": business.api_token,
        "T_HOOK": business.webhook_token,
        "T_TWILIO": business.twilio_token,
        "T_OPS": business.operator_key,
    }
    env = {**config, **secrets}

    async def cli(*args: str, **extra: str) -> tuple[int, str, str]:
        return await orderbot_cli("tenants", *args, env={**env, **extra}, cwd=tmp_path)

    try:
        added = await cli(
            "add",
            business.slug,
            "--name",
            "Plov House",
            "--chat2desk-api-token",
            "env:T_API",
            "--chat2desk-webhook-token",
            "env:T_HOOK",
            "--twilio-account-sid",
            business.twilio_sid,
            "--twilio-auth-token",
            "env:T_TWILIO",
            "--twilio-whatsapp-from",
            business.number,
            "--webhook-rate-limit-customer",
            "5",
            "--operator-api-key",
            "env:T_OPS",
        )
        again = await cli("add", business.slug, "--name", "twice")
        updated = await cli(
            "update",
            business.slug,
            *("--name", "Plov House 2", "--send-rate-limit", "9"),
            *("--phone-region", "kz", "--phone-regions-allowed", "KG,ru"),
            *("--business-name", "Plov House", "--delivery-minutes", "45"),
        )
        disabled = await cli("disable", business.slug)
        listed = await cli("list", "--json")
        table = await cli("list")
        rotated_key = new_key()
        rotated = await cli("reencrypt", ORDERBOT_MASTER_KEY=f"{rotated_key},{master_key}")
        row = await db.fetchrow("SELECT * FROM tenants WHERE slug = $1", business.slug)
    finally:
        await db.execute("DELETE FROM tenants WHERE slug = $1", business.slug)

    assert added[0] == 0, added[2]
    assert (again[0], again[2].strip()) == (
        1,
        "orderbot tenants add: a tenant with this slug exists",
    )
    assert updated[0] == 0, updated[2]
    assert disabled[0] == 0, disabled[2]
    assert rotated == (0, "re-encrypted 1 tenant(s)\n", rotated[2])
    [mine] = [
        json.loads(line)
        for line in listed[1].splitlines()
        if json.loads(line)["slug"] == business.slug
    ]
    assert mine["name"] == "Plov House 2"
    assert mine["active"] is False
    assert (mine["chat2desk"], mine["twilio"], mine["twilio_whatsapp_from"]) == (
        True,
        True,
        business.number,
    )
    assert (mine["webhook_rate_limit_customer"], mine["send_rate_limit"]) == (5, 9)
    assert (mine["phone_region"], mine["phone_regions_allowed"]) == ("KZ", ["KG", "RU"])
    assert (mine["business_name"], mine["delivery_minutes"]) == ("Plov House", 45)
    assert mine["operator_api"] is True
    assert business.slug in table[1]
    output = "".join(
        out + err for _, out, err in (added, updated, disabled, listed, table, rotated)
    )
    for secret in secrets.values():
        assert secret not in output
    assert row is not None
    assert row["operator_api_key_sha256"] == operator_key_hash(business.operator_key)
    assert SecretBox(rotated_key).decrypt(row["twilio_auth_token_enc"]) == business.twilio_token
    with pytest.raises(UnreadableSecret):
        SecretBox(master_key).decrypt(row["twilio_auth_token_enc"])


async def test_cli_without_a_master_key_says_so_in_one_line(
    config: dict[str, str], tmp_path: Path
) -> None:
    env = {**config, "ORDERBOT_MASTER_KEY": ""}

    status, _, stderr = await orderbot_cli(
        "tenants", "add", "nokey", "--chat2desk-api-token", "x", env=env, cwd=tmp_path
    )

    assert status == 2
    assert stderr.count("\n") == 1
    assert stderr.startswith("orderbot tenants add: ORDERBOT_MASTER_KEY is not set")
