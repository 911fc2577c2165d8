"""Chat2Desk's X-Signature: the example of Chat2Desk's API documentation verifies, a
changed body, timestamp or key does not, and a bad signature queues nothing."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aio_pika.abc import AbstractChannel
from aiohttp.test_utils import TestClient, TestServer

from orderbot.config.settings import Settings
from server.app import create_app
from server.chat2desk_signature import is_valid, signature
from server.keys import BROKER
from tests.support.broker_tools import depth, messages_queues
from tests.support.credentials import API_TOKEN
from tests.support.customers import Customer

# Chat2Desk API documentation, "Webhook Signature Verification": this body and timestamp
# signed under the placeholder key `md5_api_token`.
DOC_BODY = (
    b'{"message_id":28780,"type":"from_client","text":"test7","transport":"widget",'
    b'"client_id":12568,"operator_id":null,"dialog_id":942,"channel_id":1,'
    b'"photo":null,"coordinates":null,"audio":null,"pdf":null,'
    b'"client":{"id":12568,"phone":"[chat] 1d0bb2e221762cfcc05c",'
    b'"client_phone":null,"name":"[chat] 1d0bb2e221762cfcc05c",'
    b'"assigned_name":null,"external_id":null},"hook_type":"inbox",'
    b'"request_id":5357,"attachments":[],"is_new_request":false,'
    b'"is_new_client":false,"insta_comment":false,"extra_data":{},'
    b'"is_new":true,"event_time":"2025-04-03T11:50:06.984494Z"}'
)
DOC_TIMESTAMP = "1743681006"
DOC_SIGNATURE = "88b574d8237e1b7740f88102018b734d3dd5bc6803c509a3694eff9721b0c595"

Client = TestClient[Any, Any]


def test_the_documentation_example_verifies() -> None:
    assert signature(DOC_BODY, DOC_TIMESTAMP, b"md5_api_token") == DOC_SIGNATURE


@pytest.mark.parametrize(
    ("body", "timestamp", "key"),
    [
        (DOC_BODY + b" ", DOC_TIMESTAMP, b"md5_api_token"),
        (DOC_BODY, "1743681007", b"md5_api_token"),
        (DOC_BODY, DOC_TIMESTAMP, b"md5_api_tokeN"),
    ],
    ids=["changed body", "changed timestamp", "changed key"],
)
def test_a_changed_body_timestamp_or_key_does_not_verify(
    body: bytes, timestamp: str, key: bytes
) -> None:
    assert signature(body, timestamp, key) != DOC_SIGNATURE


@pytest.mark.parametrize("form", ["hex", "raw"])
def test_the_md5_of_the_token_is_taken_as_hex_text_or_raw_digest(form: str) -> None:
    digest = hashlib.md5(b"a-token", usedforsecurity=False)
    key = digest.hexdigest().encode() if form == "hex" else digest.digest()

    assert is_valid("a-token", DOC_BODY, DOC_TIMESTAMP, signature(DOC_BODY, DOC_TIMESTAMP, key))
    assert not is_valid("b-token", DOC_BODY, DOC_TIMESTAMP, signature(DOC_BODY, DOC_TIMESTAMP, key))


def _signed(body: bytes, timestamp: str = "1767225600") -> dict[str, str]:
    key = hashlib.md5(API_TOKEN.encode(), usedforsecurity=False).hexdigest().encode()
    return {
        "Content-Type": "application/json",
        "X-Timestamp": timestamp,
        "X-Signature": signature(body, timestamp, key),
    }


async def _post(settings: Settings, url: str, body: bytes, headers: dict[str, str]) -> int:
    app = create_app(settings)
    async with TestClient(TestServer(app)) as client:
        await app[BROKER].wait_connected()
        response = await client.post(url, data=body, headers=headers)
        return response.status


@pytest.mark.parametrize(
    ("mode", "signed", "expected"),
    [
        ("require", "valid", 200),
        ("require", "none", 403),
        ("require", "bad", 403),
        ("check", "none", 200),
        ("check", "bad", 403),
        ("off", "bad", 200),
    ],
)
async def test_the_signature_mode_decides_what_is_queued(
    make_settings: Callable[..., Settings],
    amqp: AbstractChannel,
    webhook_url: Callable[[str], str],
    mode: str,
    signed: str,
    expected: int,
) -> None:
    settings = make_settings(chat2desk_webhook_signature=mode)
    body = orjson.dumps(Customer().says("hello"))
    headers = {"Content-Type": "application/json"}
    if signed == "valid":
        headers = _signed(body)
    elif signed == "bad":
        headers = {**_signed(body), "X-Signature": "0" * 64}

    status = await _post(settings, webhook_url(""), body, headers)

    assert status == expected
    assert await depth(amqp, messages_queues(settings)) == (1 if expected == 200 else 0)
