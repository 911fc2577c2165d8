"""Signing in to the console in a real browser."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.browser import Browser
from tests.support.console import sign_in
from tests.support.credentials import CONSOLE_SECRET, OPERATOR_KEY


@pytest.fixture
def config(config: dict[str, str], namespace: str) -> dict[str, str]:
    return {**config, "TENANT": f"tenant-{namespace}", "CONSOLE_SESSION_SECRET": CONSOLE_SECRET}


async def test_a_wrong_key_cannot_sign_in(
    console_server: str, browsers: Callable[..., Browser]
) -> None:
    browser = browsers("operator")
    await browser.open(f"{console_server}/console/")  # sent to the sign-in page

    (await browser.one("login-key")).send_keys("a-key-that-opens-nothing-here")
    await browser.click(await browser.one("login-submit"))

    assert "opens no console" in (await browser.one("login-error")).text
    assert browser.all("board") == []
    assert browser.driver.get_cookie("orderbot_console") is None
    await browser.open(f"{console_server}/console/")
    await browser.one("login-key")


async def test_the_right_key_signs_in_and_sign_out_signs_out(
    console_server: str, browsers: Callable[..., Browser]
) -> None:
    browser = browsers("operator")
    await sign_in(browser, console_server, OPERATOR_KEY)
    cookie = browser.driver.get_cookie("orderbot_console")
    assert cookie is not None
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"

    await browser.click(await browser.one("signout"))

    await browser.one("login-key")
    await browser.open(f"{console_server}/console/")
    await browser.one("login-key")
