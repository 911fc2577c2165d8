"""The board in a real browser: a customer's new order appears without a reload, an
operator moves it with a click, and it fits a phone's screen."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.support.browser import PHONE, Browser
from tests.support.console import sign_in
from tests.support.credentials import CONSOLE_SECRET, OPERATOR_KEY, WEBHOOK_TOKEN
from tests.support.customers import HAPPY_PATH_RU, Customer, converse
from tests.support.fake_provider import FakeChat2Desk
from tests.support.operator_tools import history, insert_order

DOCS_SHOT = "console"


@pytest.fixture
def config(config: dict[str, str], namespace: str) -> dict[str, str]:
    return {**config, "TENANT": f"tenant-{namespace}", "CONSOLE_SESSION_SECRET": CONSOLE_SECRET}


@pytest.fixture
async def pipeline(console_server: str, spawn: Callable[..., Any]) -> str:
    """The server, a worker and an outbox worker: a customer's message becomes an order."""
    await spawn("worker")
    await spawn("outbox_worker")
    return console_server


async def order_of(db: asyncpg.Connection, customer: Customer) -> int:
    order_id = await db.fetchval("SELECT id FROM orders WHERE client_id = $1", customer.client_id)
    assert order_id is not None
    return int(order_id)


async def test_a_new_order_appears_without_a_reload_and_one_click_moves_it_to_preparing(
    pipeline: str,
    browsers: Callable[..., Browser],
    fake: FakeChat2Desk,
    db: asyncpg.Connection,
) -> None:
    browser = browsers("operator")
    await sign_in(browser, pipeline, OPERATOR_KEY)
    browser.script("window.sameDocument = true;")  # gone if the page reloads
    await browser.one("live", ":not([hidden])")

    customer = Customer()
    async with aiohttp.ClientSession() as http:

        async def post(body: dict[str, Any]) -> int:
            url = f"{pipeline}/webhook/chat2desk/{WEBHOOK_TOKEN}"
            async with http.post(url, json=body) as response:
                return response.status

        await converse(post, fake, customer, HAPPY_PATH_RU)
    order_id = await order_of(db, customer)

    card = f'[data-order-id="{order_id}"][data-status="CONFIRMED"]'
    await browser.one("order-card", card)
    assert browser.script("return window.sameDocument === true;")
    browser.screenshot("console-new-order")

    button = await browser.one("order-card", card)
    await browser.click(button.find_element("css selector", '[data-testid="move-PREPARING"]'))

    moved = f'[data-order-id="{order_id}"][data-status="PREPARING"]'
    await browser.until(
        lambda _: browser.all("order-card", moved) and not browser.all("order-card", card),
        "the card in the PREPARING column",
    )
    assert browser.all("order-card", moved)[0].find_element(
        "xpath", "ancestor::section"
    ).get_attribute("data-column") == ("PREPARING")
    assert (await history(db, order_id))[-1] == ("CONFIRMED", "PREPARING", "operator")
    browser.screenshot(DOCS_SHOT)


async def test_an_order_moved_elsewhere_changes_column_without_a_reload(
    console_server: str,
    browsers: Callable[..., Browser],
    db: asyncpg.Connection,
    config: dict[str, str],
) -> None:
    for n, status in enumerate(["CONFIRMED", "OUT_FOR_DELIVERY", "DELIVERED", "CANCELLED"]):
        await insert_order(db, tenant=config["TENANT"], client_id=f"other-{n}", status=status)
    order_id = await insert_order(db, tenant=config["TENANT"], client_id="moved-elsewhere")
    browser = browsers("operator")
    await sign_in(browser, console_server, OPERATOR_KEY)
    browser.script("window.sameDocument = true;")
    await browser.one("order-card", f'[data-order-id="{order_id}"][data-status="CONFIRMED"]')

    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{console_server}/api/orders/{order_id}/status",
            json={"status": "PREPARING"},
            headers={"Authorization": f"Bearer {OPERATOR_KEY}"},
        ) as response,
    ):
        assert response.status == 200

    await browser.one("order-card", f'[data-order-id="{order_id}"][data-status="PREPARING"]')
    assert browser.script("return window.sameDocument === true;")
    browser.screenshot("console-board")


async def test_the_board_fits_a_phone_screen(
    console_server: str,
    browsers: Callable[..., Browser],
    db: asyncpg.Connection,
    config: dict[str, str],
) -> None:
    for n in range(3):
        await insert_order(db, tenant=config["TENANT"], client_id=f"phone-{n}")
    browser = browsers("phone", size=PHONE)
    await sign_in(browser, console_server, OPERATOR_KEY)
    await browser.one("order-card")

    overflow = browser.script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth;"
    )

    assert overflow <= 0
    assert (await browser.one("move-PREPARING")).is_displayed()
    browser.screenshot("console-phone")


async def test_a_move_refused_by_the_rules_shows_why_on_the_page(
    console_server: str,
    browsers: Callable[..., Browser],
    db: asyncpg.Connection,
    config: dict[str, str],
) -> None:
    order_id = await insert_order(db, tenant=config["TENANT"], client_id="stale-tab")
    # Without its script, the page stays as served: a tab left open while someone else acts.
    browser = browsers("operator", javascript=False)
    await sign_in(browser, console_server, OPERATOR_KEY)
    await browser.open(f"{console_server}/console/orders/{order_id}")
    button = await browser.one("move-PREPARING")
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{console_server}/api/orders/{order_id}/status",
            json={"status": "CANCELLED"},
            headers={"Authorization": f"Bearer {OPERATOR_KEY}"},
        ) as response,
    ):
        assert response.status == 200

    await browser.click(button)

    error = await browser.one("move-error")
    assert "an order in CANCELLED cannot move to PREPARING" in error.text
    assert (await browser.one("order")).get_attribute("data-status") == "CANCELLED"
    assert browser.all("move-PREPARING") == []
    assert (await history(db, order_id))[-1] == ("CONFIRMED", "CANCELLED", "operator")
    browser.screenshot("console-refused")
