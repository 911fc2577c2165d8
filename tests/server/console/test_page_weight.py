"""What the board costs a browser: its bytes (HTML, CSS, JS) and its first paint, read
from Chromium's Performance API and written to var/test-artifacts/console-weight-*.json."""

from __future__ import annotations

import json
from collections.abc import Callable

import asyncpg
import pytest

from tests.support.browser import ARTIFACTS, Browser
from tests.support.console import sign_in
from tests.support.credentials import CONSOLE_SECRET, OPERATOR_KEY
from tests.support.operator_tools import insert_order

# Far above what it weighs (about 8 KB empty, 31 KB with 20 orders): a budget that a
# framework, an inlined image or a font would break.
BUDGET_BYTES = 60_000

MEASURE = """
const nav = performance.getEntriesByType("navigation")[0];
const assets = performance.getEntriesByType("resource")
  .filter(r => r.initiatorType === "link" || r.initiatorType === "script");
const paints = Object.fromEntries(
  performance.getEntriesByType("paint").map(p => [p.name, p.startTime]));
return {
  html: nav.decodedBodySize,
  assets: assets.map(r => [r.name, r.decodedBodySize]),
  first_paint_ms: paints["first-paint"],
  first_contentful_paint_ms: paints["first-contentful-paint"],
};
"""


@pytest.fixture
def config(config: dict[str, str], namespace: str) -> dict[str, str]:
    return {**config, "TENANT": f"tenant-{namespace}", "CONSOLE_SESSION_SECRET": CONSOLE_SECRET}


@pytest.mark.parametrize("orders", [0, 20])
async def test_the_board_weighs_little_and_paints(
    orders: int,
    console_server: str,
    browsers: Callable[..., Browser],
    db: asyncpg.Connection,
    config: dict[str, str],
) -> None:
    for n in range(orders):
        await insert_order(db, tenant=config["TENANT"], client_id=f"weight-{n}")
    browser = browsers("operator")
    await sign_in(browser, console_server, OPERATOR_KEY)
    browser.driver.execute_cdp_cmd("Network.clearBrowserCache", {})
    await browser.open(f"{console_server}/console/")  # a load of the board from cold
    await browser.until(
        lambda _: browser.script("return performance.getEntriesByType('paint').length >= 2"),
        "the board's first paints",
    )

    measured = browser.script(MEASURE)

    names = [name.rsplit("/", 1)[-1] for name, _ in measured["assets"]]
    assert sorted(names) == ["console.css", "console.js"]  # every asset is ours, nothing else
    total = measured["html"] + sum(size for _, size in measured["assets"])
    measured["total_bytes"] = total
    measured["orders_on_board"] = orders
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"console-weight-{orders}.json").write_text(json.dumps(measured, indent=2))
    assert 0 < total < BUDGET_BYTES
    assert measured["first_contentful_paint_ms"] > 0
