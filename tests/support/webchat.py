"""A web chat customer as the page acts: open the page (which sets the cookie), post
messages with ids of its own, read the chat's event stream."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from tests.support.customers import HAPPY_PATH_RU, expected_replies
from tests.support.sse import SseReader

COOKIE = "orderbot_chat"


class ChatCustomer:
    def __init__(self, client: TestClient[Any, Any], tenant: str = "default") -> None:
        self.client = client
        self.tenant = tenant
        self.cookie: str | None = None

    @property
    def base(self) -> str:
        return f"/chat/{self.tenant}"

    @property
    def session(self) -> str:
        assert self.cookie is not None
        return self.cookie.split(".", 1)[0]

    def headers(self) -> dict[str, str]:
        return {"Cookie": f"{COOKIE}={self.cookie}"} if self.cookie else {}

    async def open(self) -> str:
        """The page's HTML; keeps the cookie it sets."""
        # The test client's jar would send the cookie by itself; this one sends it by hand.
        self.client.session.cookie_jar.clear()
        response = await self.client.get(self.base)
        assert response.status == 200, await response.text()
        morsel = response.cookies.get(COOKIE)
        if morsel is not None:
            self.cookie = morsel.value
        self.client.session.cookie_jar.clear()
        return await response.text()

    async def post(self, data: bytes, content_type: str) -> ClientResponse:
        """A message post with this session's cookie and a body of the test's own."""
        return await self.client.post(
            f"{self.base}/messages",
            data=data,
            headers={**self.headers(), "Content-Type": content_type},
        )

    async def say(self, text: str, *, message_id: str | None = None) -> dict[str, Any]:
        response = await self.client.post(
            f"{self.base}/messages",
            json={"id": message_id or uuid.uuid4().hex, "text": text},
            headers=self.headers(),
        )
        body: dict[str, Any] = await response.json()
        assert response.status == 200, body
        return body

    @contextlib.asynccontextmanager
    async def events(self, last_id: str | None = None) -> AsyncIterator[SseReader]:
        headers = self.headers()
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        response = await self.client.get(f"{self.base}/events", headers=headers)
        assert response.status == 200, await response.text()
        try:
            yield SseReader(response)
        finally:
            response.close()


async def opened(client: TestClient[Any, Any], tenant: str = "default") -> ChatCustomer:
    """A customer who has opened the chat's page: holding its cookie."""
    customer = ChatCustomer(client, tenant)
    await customer.open()
    return customer


async def replies_until(reader: SseReader, count: int) -> list[str]:
    """The texts of the next `count` replies on the chat's stream."""
    texts: list[str] = []
    while len(texts) < count:
        event = await reader.next(timeout=30)
        if event.data["direction"] == "out":
            texts.append(event.data["text"])
    return texts


async def place_order(customer: ChatCustomer, stream: SseReader) -> list[str]:
    """The happy path's messages, said one by one; the replies they got."""
    for text in HAPPY_PATH_RU:
        await customer.say(text)
    return await replies_until(stream, len(expected_replies(HAPPY_PATH_RU, own_phone=None)))
