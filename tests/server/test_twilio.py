"""The Twilio WhatsApp channel: signatures checked against the `twilio` package's own
RequestValidator, a whole conversation through form posts, and the webhook limits."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import asyncpg
import pytest
from aio_pika.abc import AbstractChannel
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from dialog import Lang
from dialog.texts import Msg, render
from dialog.validation import display_phone
from orderbot.config.settings import Settings
from server import twilio_signature
from server.app import create_app
from server.keys import BROKER
from tests.support.broker_tools import depth, messages_queues
from tests.support.credentials import TWILIO_NUMBER, TWILIO_SID, TWILIO_TOKEN
from tests.support.customers import HAPPY_PATH_RU, expected_replies
from tests.support.fake_provider import FakeChat2Desk
from tests.support.twilio import URL, WhatsAppCustomer, post

Client = TestClient[Any, Any]
params = st.lists(st.tuples(st.text(min_size=1, max_size=12), st.text(max_size=30)), max_size=8)


@given(params)
def test_our_signature_equals_the_reference_implementations(pairs: list[tuple[str, str]]) -> None:
    from multidict import MultiDict

    reference = RequestValidator(TWILIO_TOKEN).compute_signature(URL, MultiDict(pairs))
    assert twilio_signature.compute_signature(TWILIO_TOKEN, URL, pairs) == reference


@given(params, st.sampled_from(["url", "param", "token"]))
def test_any_change_to_url_parameter_or_token_invalidates_the_signature(
    pairs: list[tuple[str, str]], change: str
) -> None:
    from multidict import MultiDict

    signature = RequestValidator(TWILIO_TOKEN).compute_signature(URL, MultiDict(pairs))
    url, token, checked = URL, TWILIO_TOKEN, list(pairs)
    if change == "url":
        url = URL + "x"
    elif change == "token":
        token = TWILIO_TOKEN + "x"
    else:
        checked.append(("Extra", "1"))
    assert twilio_signature.is_valid(TWILIO_TOKEN, URL, pairs, signature)
    assert not twilio_signature.is_valid(token, url, checked, signature)


async def test_a_whole_whatsapp_conversation_creates_the_order_and_replies_from_our_number(
    client: Client, worker: asyncio.Task[None], fake: FakeChat2Desk, db: asyncpg.Connection
) -> None:
    customer = WhatsAppCustomer()
    for count, text in enumerate(HAPPY_PATH_RU, start=1):
        response = await post(client, customer.says(text))
        assert response.status == 200
        assert response.content_type == "text/xml"
        assert "<Response></Response>" in await response.text()
        await fake.wait_for(lambda n=count: len(fake.texts_for(customer.number)) >= n)

    own_phone = customer.number.removeprefix("whatsapp:")
    assert fake.texts_for(customer.number) == expected_replies(HAPPY_PATH_RU, own_phone)
    sent = fake.received[-1].body
    assert sent["From"] == TWILIO_NUMBER
    assert sent["To"] == customer.number
    assert sent["account"] == TWILIO_SID
    assert fake.received[-1].headers["Authorization"].startswith("Basic ")
    rows = await db.fetch("SELECT * FROM orders WHERE client_id = $1", customer.number)
    assert len(rows) == 1
    assert rows[0]["provider"] == "twilio"
    assert rows[0]["chat2desk_client_id"] is None
    assert rows[0]["quantity"] == 3


@pytest.mark.parametrize(
    "signing",
    [{"url": "http://127.0.0.1/webhook/twilio"}, {"token": "another-accounts-token"}],
    ids=["signed-for-another-url", "signed-with-another-token"],
)
async def test_bad_signature_is_403_and_queues_nothing(
    client: Client, amqp: AbstractChannel, settings: Settings, signing: dict[str, str]
) -> None:
    response = await post(client, WhatsAppCustomer().says("hi"), **signing)
    assert response.status == 403
    assert (await response.json())["error"] == "invalid signature"
    assert await depth(amqp, messages_queues(settings)) == 0


async def test_missing_signature_is_403(client: Client) -> None:
    form = WhatsAppCustomer().says("hi")
    response = await client.post(
        "/webhook/twilio",
        data=urlencode(form),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status == 403


async def test_message_to_a_number_we_do_not_serve_is_404(
    client: Client, amqp: AbstractChannel, settings: Settings
) -> None:
    form = {**WhatsAppCustomer().says("hi"), "To": "whatsapp:+10000000000"}
    response = await post(client, form)
    assert response.status == 404
    assert await depth(amqp, messages_queues(settings)) == 0


async def test_repeated_field_and_wrong_content_type_are_clear_4xx(client: Client) -> None:
    form = WhatsAppCustomer().says("hi")
    pairs = [*form.items(), ("Body", "again")]
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": twilio_signature.compute_signature(TWILIO_TOKEN, URL, pairs),
    }
    repeated = await client.post("/webhook/twilio", data=urlencode(pairs), headers=headers)
    as_json = await client.post("/webhook/twilio", json=form)

    assert repeated.status == 422
    assert (await repeated.json())["detail"] == [{"field": "Body", "problem": "repeated"}]
    assert as_json.status == 415


async def test_a_flooding_whatsapp_customer_is_never_refused_at_the_edge(
    make_settings: Callable[..., Settings], amqp: AbstractChannel
) -> None:
    # Twilio never retries a refused webhook: the budget is the worker's to apply.
    settings = make_settings(webhook_rate_limit_customer=20)
    app = create_app(settings)
    async with TestClient(TestServer(app)) as client:
        await app[BROKER].wait_connected()
        flooder, other = WhatsAppCustomer(), WhatsAppCustomer()
        statuses = [(await post(client, flooder.says(f"msg {i}"))).status for i in range(21)]
        served = await post(client, other.says("hello"))

    assert statuses == [200] * 21
    assert served.status == 200
    assert await depth(amqp, messages_queues(settings)) == 22


async def test_a_whatsapp_customer_is_offered_their_own_number_and_yes_takes_it(
    client: Client, worker: asyncio.Task[None], fake: FakeChat2Desk, db: asyncpg.Connection
) -> None:
    customer = WhatsAppCustomer()
    own_phone = f"+99670{uuid.uuid4().int % 10**7:07d}"  # a mobile number of Kyrgyzstan
    customer.number = f"whatsapp:{own_phone}"
    texts = ["Здравствуйте", "ул. Киевская 95, кв 12", "да", "3", "да"]
    for count, text in enumerate(texts, start=1):
        assert (await post(client, customer.says(text))).status == 200
        await fake.wait_for(lambda n=count: len(fake.texts_for(customer.number)) >= n)

    offer = fake.texts_for(customer.number)[1]
    assert offer == render(Msg.OFFER_OWN_PHONE, Lang.RU, own_phone=display_phone(own_phone))
    phone = await db.fetchval(
        "SELECT client_phone FROM orders WHERE client_id = $1", customer.number
    )
    assert phone == own_phone
