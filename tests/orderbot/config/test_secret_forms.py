"""Secrets are masked in the forms they leave in: base64, a Basic auth header, after an
auth scheme; in log lines and in the error texts that become DLQ headers."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from orderbot.config.settings import Settings
from orderbot.delivery.chat2desk import Chat2DeskSender
from orderbot.delivery.twilio import TwilioSender
from orderbot.envelopes import Conversation
from orderbot.errors import PermanentSendError
from orderbot.runtime.logging import SecretRedactor
from orderbot.tenancy.directory import Tenant
from tests.support.credentials import API_TOKEN, TWILIO_NUMBER, TWILIO_SID, TWILIO_TOKEN

BASIC = base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()


def _masked(redactor: SecretRedactor, text: str) -> str:
    return str(redactor(None, "info", {"event": "x", "error": text})["error"])


def test_the_twilio_basic_auth_header_is_masked_by_the_settings_redactor(
    settings: Settings,
) -> None:
    redactor = SecretRedactor(settings.secrets())
    for text in (
        f"echo: Authorization: Basic {BASIC}",
        f'{{"auth": "{BASIC}"}}',
        f"{BASIC.rstrip('=')}",
    ):
        masked = _masked(redactor, text)
        assert BASIC.rstrip("=") not in masked, text
        assert "[redacted]" in masked


def test_a_tenants_basic_auth_header_is_masked_once_its_secrets_are_registered() -> None:
    sid, token = "AC" + "1" * 32, "tenant-twilio-token-8f2e"
    tenant = Tenant(slug="t", name="t", twilio_account_sid=sid, twilio_auth_token=token)
    redactor = SecretRedactor([])
    redactor.add(tenant.secrets())
    basic = base64.b64encode(f"{sid}:{token}".encode()).decode()
    assert basic not in _masked(redactor, f"Basic {basic}")
    assert basic not in _masked(redactor, basic)


@pytest.mark.parametrize(
    "shape",
    [
        "{}",
        "Bearer {}",
        "Token {}",
        "{b64}",
        "{b64url}",
        "x{b64}x",
    ],
)
def test_a_secret_is_masked_in_its_derived_forms(shape: str) -> None:
    secret = "s3cr3t-+/token~value?"
    b64 = base64.b64encode(secret.encode()).decode()
    b64url = base64.urlsafe_b64encode(secret.encode()).decode()
    text = shape.format(secret, b64=b64, b64url=b64url)
    masked = _masked(SecretRedactor([secret]), text)
    assert secret not in masked
    assert b64.rstrip("=") not in masked
    assert b64url.rstrip("=") not in masked


def test_among_secrets_of_every_length_each_is_masked_as_a_whole_value_and_inside_one() -> None:
    secrets = [f"k{'x' * n}{n}" for n in range(4, 40)]
    redactor = SecretRedactor(secrets)
    for secret in secrets:
        unpadded = base64.b64encode(secret.encode()).decode().rstrip("=")
        assert _masked(redactor, secret) == "[redacted]"
        assert _masked(redactor, unpadded) == "[redacted]"
        assert _masked(redactor, f"a{secret}b") == "a[redacted]b"


def test_the_shortest_things_masked_are_masked_as_whole_values() -> None:
    assert _masked(SecretRedactor(["abcd"]), "abcd") == "[redacted]"
    assert _masked(SecretRedactor([]), "Token abcdefghijkl") == "Token [redacted]"


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "Basic", "Token"])
def test_any_credential_after_an_auth_scheme_is_masked_even_an_unknown_one(scheme: str) -> None:
    unknown = "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA=="
    masked = _masked(SecretRedactor([]), f"provider said: Authorization: {scheme} {unknown}")
    assert unknown.rstrip("=") not in masked
    assert masked == f"provider said: Authorization: {scheme} [redacted]"


def test_ordinary_words_after_token_or_basic_are_left_alone() -> None:
    text = "Token bucket empty; basic checks passed; the Token endpoint"
    assert _masked(SecretRedactor(["unrelated-secret"]), text) == text


@pytest.fixture
async def echoing() -> AsyncIterator[Callable[[], str]]:
    """A provider that refuses every send, echoing the request's Authorization header."""

    async def refuse(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        return web.json_response({"code": 20003, "echo": auth}, status=401)

    app = web.Application()
    app.router.add_post("/{tail:.*}", refuse)
    async with TestServer(app) as server:
        yield lambda: str(server.make_url(""))


async def test_provider_errors_echoing_the_auth_header_keep_no_form_of_the_secret(
    echoing: Callable[[], str],
) -> None:
    conversation = Conversation(tenant="t", provider="twilio", client_id="whatsapp:+996555000111")
    async with aiohttp.ClientSession() as session:
        twilio = TwilioSender(session, echoing(), TWILIO_SID, TWILIO_TOKEN, TWILIO_NUMBER)
        chat2desk = Chat2DeskSender(session, echoing(), API_TOKEN)
        reasons: list[str] = []
        for sender in (twilio, chat2desk):
            with pytest.raises(PermanentSendError) as refused:
                await sender.send(conversation, "hi")
            reasons.append(str(refused.value))
    assert BASIC.rstrip("=") not in reasons[0]
    assert TWILIO_TOKEN not in reasons[0]
    assert "[redacted]" in reasons[0]
    assert API_TOKEN not in reasons[1]
    assert "[redacted]" in reasons[1]
