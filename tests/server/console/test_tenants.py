"""Two businesses on one server: each operator's console shows its own orders and live
events, never the other's."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import asyncpg
import pytest

from orderbot.config.secret_box import SecretBox, new_key
from orderbot.tenancy import store as tenant_store
from tests.support.browser import Browser
from tests.support.console import sign_in
from tests.support.credentials import CONSOLE_SECRET
from tests.support.operator_tools import insert_order


@dataclass(frozen=True)
class Business:
    slug: str
    operator_key: str


@pytest.fixture
def master_key() -> str:
    return new_key()


@pytest.fixture
def config(config: dict[str, str], master_key: str) -> dict[str, str]:
    return {**config, "ORDERBOT_MASTER_KEY": master_key, "CONSOLE_SESSION_SECRET": CONSOLE_SECRET}


@pytest.fixture
async def businesses(
    db: asyncpg.Connection, master_key: str
) -> AsyncIterator[tuple[Business, Business]]:
    """Two tenants of the table, each with an operator key of its own."""
    box = SecretBox(master_key)
    made = []
    for label in ("north", "south"):
        tag = uuid.uuid4().hex
        business = Business(slug=f"{label}-{tag[:10]}", operator_key=f"ops-{label}-{tag}")
        changes = tenant_store.TenantChanges(
            name=f"Business {label}", operator_api_key=business.operator_key
        )
        await tenant_store.add(db, business.slug, changes, box)
        made.append(business)
    yield made[0], made[1]
    await db.execute("DELETE FROM tenants WHERE slug = ANY($1::text[])", [b.slug for b in made])


async def move_by_api(base_url: str, business: Business, order_id: int, status: str) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{base_url}/api/orders/{order_id}/status",
            json={"status": status},
            headers={"Authorization": f"Bearer {business.operator_key}"},
        ) as response,
    ):
        assert response.status == 200


async def test_one_tenant_s_console_never_shows_another_s_orders_or_events(
    businesses: tuple[Business, Business],
    console_server: str,
    browsers: Callable[..., Browser],
    db: asyncpg.Connection,
) -> None:
    north, south = businesses
    ours = await insert_order(db, tenant=north.slug, client_id="north-1")
    theirs = await insert_order(db, tenant=south.slug, client_id="south-1")
    browser = browsers("north-operator")
    await sign_in(browser, console_server, north.operator_key)
    await browser.one("order-card", f'[data-order-id="{ours}"]')
    assert browser.all("order-card", f'[data-order-id="{theirs}"]') == []

    # Theirs moves first, then ours: a stream that let their events through would have
    # had theirs to show by the time ours arrives.
    await move_by_api(console_server, south, theirs, "PREPARING")
    await move_by_api(console_server, north, ours, "PREPARING")

    await browser.one("order-card", f'[data-order-id="{ours}"][data-status="PREPARING"]')
    assert browser.all("order-card", f'[data-order-id="{theirs}"]') == []

    await browser.open(f"{console_server}/console/orders/{theirs}")
    assert "no such order" in (await browser.one("page-error")).text
    await browser.open(f"{console_server}/console/?q=south-1")
    await browser.one("results")
    assert browser.all("order-card") == []
