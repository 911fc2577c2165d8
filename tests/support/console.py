"""An operator's side of the console tests: signing in over HTTP, reading a page's CSRF
token, and signing in with a browser."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from tests.support.browser import Browser
from tests.support.credentials import OPERATOR_KEY, PUBLIC_BASE_URL

Client = TestClient[Any, Any]
COOKIE = "orderbot_console"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def sign_in_http(
    client: Client, key: str = OPERATOR_KEY, origin: str = PUBLIC_BASE_URL
) -> ClientResponse:
    return await client.post(
        "/console/login", data={"key": key}, headers={"Origin": origin}, allow_redirects=False
    )


def session_cookie(response: ClientResponse) -> str:
    """The session cookie's value from a sign-in's Set-Cookie (sent back by hand: it is
    Secure on an https site, which the http test client would keep to itself)."""
    morsel = response.cookies[COOKIE]
    return morsel.value


def with_session(cookie: str, origin: str | None = PUBLIC_BASE_URL) -> dict[str, str]:
    headers = {"Cookie": f"{COOKIE}={cookie}"}
    if origin is not None:
        headers["Origin"] = origin
    return headers


def csrf_token(html: str) -> str:
    found = _CSRF.search(html)
    assert found is not None, "the page has no CSRF token"
    return found.group(1)


async def signed_in(client: Client) -> str:
    """A session's cookie, signed in with the operator key."""
    response = await sign_in_http(client)
    assert response.status == 303
    return session_cookie(response)


async def page(client: Client, path: str, cookie: str) -> tuple[int, str]:
    response = await client.get(path, headers=with_session(cookie), allow_redirects=False)
    return response.status, await response.text()


async def order_page(client: Client, order_id: int) -> tuple[str, str]:
    """Signed in, the order's page read: the session's cookie and the page."""
    cookie = await signed_in(client)
    _, html = await page(client, f"/console/orders/{order_id}", cookie)
    return cookie, html


async def post_form(
    client: Client,
    path: str,
    cookie: str,
    form: dict[str, str],
    *,
    origin: str = PUBLIC_BASE_URL,
) -> ClientResponse:
    """A form as a console page posts it, with the session's cookie; no redirect followed."""
    return await client.post(
        path, data=form, headers=with_session(cookie, origin=origin), allow_redirects=False
    )


async def sign_in(browser: Browser, base_url: str, key: str) -> None:
    """Sign in at the console's page as an operator would, and wait for the board."""
    await browser.open(f"{base_url}/console/login")
    (await browser.one("login-key")).send_keys(key)
    await browser.click(await browser.one("login-submit"))
    await browser.one("board")
