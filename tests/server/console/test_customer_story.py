"""The whole story in two real browsers: a customer orders through the web chat, the
operator sees the order appear on the board, moves it to PREPARING with a click, and the
customer's chat shows the news."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from dialog import Lang, OrderStatus, status_notice
from tests.support.browser import PHONE, Browser
from tests.support.console import sign_in
from tests.support.credentials import CONSOLE_SECRET, OPERATOR_KEY, WEBCHAT_SECRET

# The dialog's happy path, typed by a customer the chat knows no phone number of.
ORDER = ["Hello", "Main street 12, flat 3", "+996 555 123 456", "2", "yes"]


@pytest.fixture
def config(config: dict[str, str], namespace: str) -> dict[str, str]:
    return {
        **config,
        "TENANT": f"tenant-{namespace}",
        "CONSOLE_SESSION_SECRET": CONSOLE_SECRET,
        "WEBCHAT_SECRET": WEBCHAT_SECRET,
    }


@pytest.fixture
async def pipeline(console_server: str, spawn: Callable[..., Any]) -> str:
    await spawn("worker")
    await spawn("outbox_worker")
    return console_server


def replies(chat: Browser) -> list[str]:
    return chat.texts("chat-message", '[data-direction="out"]')


async def say(chat: Browser, text: str) -> None:
    """Type and send one message, then wait for the bot's answer to it."""
    answered = len(replies(chat))
    (await chat.one("chat-input")).send_keys(text)
    await chat.click(await chat.one("chat-send"))
    await chat.until(lambda _: len(replies(chat)) > answered, f"the bot's answer to {text!r}")


async def test_an_order_placed_in_the_chat_is_moved_on_the_console_and_the_chat_hears(
    pipeline: str, browsers: Callable[..., Browser], db: asyncpg.Connection, config: dict[str, str]
) -> None:
    operator = browsers("operator")
    await sign_in(operator, pipeline, OPERATOR_KEY)
    operator.script("window.sameDocument = true;")
    chat = browsers("customer", size=PHONE)
    await chat.open(f"{pipeline}/chat")
    await chat.one("chat-log")

    for text in ORDER:
        await say(chat, text)

    row = await db.fetchrow(
        "SELECT id, lang FROM orders WHERE tenant = $1 AND provider = 'webchat'", config["TENANT"]
    )
    assert row is not None
    order_id = int(row["id"])
    card = await operator.one(
        "order-card", f'[data-order-id="{order_id}"][data-status="CONFIRMED"]'
    )
    assert operator.script("return window.sameDocument === true;")

    await operator.click(card.find_element("css selector", '[data-testid="move-PREPARING"]'))

    await operator.one("order-card", f'[data-order-id="{order_id}"][data-status="PREPARING"]')
    news = status_notice(OrderStatus.PREPARING, Lang(row["lang"]), order_id)
    assert news is not None
    await chat.until(lambda _: news in replies(chat), "the PREPARING news in the chat")
    chat.screenshot("chat")
    operator.screenshot("console-story")


def conversation(operator: Browser, direction: str) -> list[str]:
    return operator.texts("conversation-text", f'[data-direction="{direction}"]')


async def test_the_order_page_shows_its_history_and_the_conversation_as_it_grows(
    pipeline: str, browsers: Callable[..., Browser], db: asyncpg.Connection, config: dict[str, str]
) -> None:
    chat = browsers("customer", size=PHONE)
    await chat.open(f"{pipeline}/chat")
    for text in ORDER:
        await say(chat, text)
    order_id = await db.fetchval(
        "SELECT id FROM orders WHERE tenant = $1 AND provider = 'webchat'", config["TENANT"]
    )
    operator = browsers("operator")
    await sign_in(operator, pipeline, OPERATOR_KEY)

    await operator.open(f"{pipeline}/console/orders/{order_id}")
    await operator.click(await operator.one("move-PREPARING"))

    await operator.one("order", '[data-status="PREPARING"]')
    history = " ".join(operator.texts("history"))
    assert "PREPARING" in history
    assert "CONFIRMED" in history
    await operator.until(
        lambda _: conversation(operator, "in") == ORDER, "the customer's messages, in order"
    )
    assert len(conversation(operator, "out")) >= len(ORDER)
    operator.script("window.sameDocument = true;")
    await operator.one("live", ":not([hidden])")

    await say(chat, "thank you")

    await operator.until(
        lambda _: conversation(operator, "in")[-1:] == ["thank you"], "the new message, live"
    )
    assert operator.script("return window.sameDocument === true;")
    operator.screenshot("console-order")
