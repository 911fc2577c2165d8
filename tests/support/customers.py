"""Simulated customers: Chat2Desk hook bodies with ids unique to the test."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp.test_utils import TestClient

from dialog import DialogState, advance
from tests.support.fake_provider import FakeChat2Desk

_ids = itertools.count(1)

HAPPY_PATH_RU = ["Здравствуйте", "ул. Киевская 95, кв 12", "+996 555 123 456", "3", "да"]
# The phone of every simulated Chat2Desk client's profile: the dialog offers it.
CLIENT_PHONE = "+996555123456"


class Customer:
    def __init__(self) -> None:
        self.client_id = str(10**9 + uuid.uuid4().int % 10**9)
        self._messages = itertools.count(1)

    def says(self, text: str, *, message_id: str | None = None) -> dict[str, Any]:
        return {
            "message_id": message_id or f"{self.client_id}-{next(self._messages)}",
            "client_id": int(self.client_id),
            "type": "from_client",
            "hook_type": "inbox",
            "text": text,
            "transport": "whatsapp",
            "channel_id": 4242,
            "dialog_id": 77,
            "client": {"phone": CLIENT_PHONE, "name": "Aida"},
        }

    def shares_location(self, latitude: float, longitude: float) -> dict[str, Any]:
        """A WhatsApp location message. Chat2Desk documents `coordinates` (null in a text
        message) but not its shape; a `"lat,lon"` string is assumed, the text empty."""
        return {**self.says(""), "coordinates": f"{latitude},{longitude}"}

    def sends_photo(self, url: str) -> dict[str, Any]:
        """A photo without a caption: Chat2Desk's `photo` link, and the same file listed
        in `attachments`."""
        return {**self.says(""), "photo": url, "attachments": [{"link": url}]}

    def operator_writes(
        self, text: str, *, message_id: int | str, operator_id: int | None = 41164
    ) -> dict[str, Any]:
        """Chat2Desk's `outbox` hook: a message to this client, an operator's or one of
        the bot's own sends coming back (`message_id` is then the one the send got)."""
        return {
            "message_id": message_id,
            "type": "to_client",
            "hook_type": "outbox",
            "text": text,
            "transport": "whatsapp",
            "client_id": int(self.client_id),
            "operator_id": operator_id,
            "dialog_id": 77,
            "channel_id": 4242,
            "client": {"id": int(self.client_id), "phone": CLIENT_PHONE, "name": "Aida"},
            "event_time": "2026-12-01T23:01:40Z",
        }

    def dialog_closed(self) -> dict[str, Any]:
        """Chat2Desk's `close_dialog` hook for this client's dialog."""
        return {
            "hook_type": "close_dialog",
            "dialog_id": 77,
            "client_id": int(self.client_id),
            "operator_id": 41164,
            "channel_id": 4242,
            "event_time": "2026-12-01T23:05:00Z",
        }


def expected_replies(texts: Iterable[str], own_phone: str | None = CLIENT_PHONE) -> list[str]:
    """What the dialog answers to these texts in this order: the oracle for delivery.
    ``own_phone`` is what the channel tells of the customer's number."""
    state = DialogState()
    replies: list[str] = []
    for text in texts:
        result = advance(state, text, own_phone=own_phone)
        state = result.state
        replies.extend(result.replies)
    return replies


def final_state(texts: Iterable[str], own_phone: str | None = CLIENT_PHONE) -> DialogState:
    state = DialogState()
    for text in texts:
        state = advance(state, text, own_phone=own_phone).state
    return state


async def answer(
    post: Callable[[dict[str, Any]], Awaitable[int]],
    fake: FakeChat2Desk,
    customer: Customer,
    body: dict[str, Any],
) -> str:
    """Send one hook body and wait for the dialog's answer to it, which is returned."""
    answered = len(fake.texts_for(customer.client_id))
    assert await post(body) == 200
    await fake.wait_for(lambda: len(fake.texts_for(customer.client_id)) > answered)
    return fake.texts_for(customer.client_id)[answered]


async def converse(
    post: Callable[[dict[str, Any]], Awaitable[int]],
    fake: FakeChat2Desk,
    customer: Customer,
    texts: Iterable[str],
) -> None:
    """Send each text once the previous one was answered, as a person would."""
    for text in texts:
        answered = len(fake.texts_for(customer.client_id))
        assert await post(customer.says(text)) == 200
        await fake.wait_for(lambda n=answered: len(fake.texts_for(customer.client_id)) > n)


def poster(client: TestClient[Any, Any], url: str) -> Callable[[dict[str, Any]], Awaitable[int]]:
    async def post(body: dict[str, Any]) -> int:
        response = await client.post(url, json=body)
        return response.status

    return post
