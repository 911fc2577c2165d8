"""The URL a Twilio signature is checked against is PUBLIC_BASE_URL, never one built
from the request's Host header, which the caller chooses."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aio_pika.abc import AbstractChannel
from aiohttp.test_utils import TestClient, TestServer

from orderbot.config.settings import Settings
from server.app import create_app
from server.keys import BROKER
from tests.support.broker_tools import depth, messages_queues
from tests.support.processes import orderbot_cli
from tests.support.twilio import WhatsAppCustomer, signed


async def test_without_public_base_url_a_request_signed_for_its_own_host_is_not_queued(
    make_settings: Callable[..., Settings], amqp: AbstractChannel, redis: Any
) -> None:
    settings = make_settings(public_base_url=None)
    app = create_app(settings)
    async with TestClient(TestServer(app)) as client:
        await asyncio.wait_for(app[BROKER].wait_connected(), 30)
        form = WhatsAppCustomer().says("hi")
        for host in (f"127.0.0.1:{client.port}", "attacker.example"):
            url = f"http://{host}/webhook/twilio"
            response = await client.post(
                "/webhook/twilio",
                data=urlencode(form),
                headers={**signed(form, url=url), "Host": host},
            )
            assert response.status == 503, host
            assert await response.json() == {"error": "signature cannot be checked"}
    assert await depth(amqp, messages_queues(settings)) == 0


async def test_the_server_does_not_start_with_twilio_settings_and_no_public_base_url(
    config: dict[str, str], tmp_path: Path
) -> None:
    env = {**config, "PUBLIC_BASE_URL": ""}
    code, _, stderr = await orderbot_cli("server", env=env, cwd=tmp_path)

    assert code == 2
    assert stderr.strip() == (
        "orderbot server: PUBLIC_BASE_URL is required with TWILIO_* (the URL Twilio signs)"
    )
