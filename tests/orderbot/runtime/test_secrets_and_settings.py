"""Guarantee 9 (no secret in a log line or an error body) and start-up configuration
errors that name the bad setting."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aio_pika.abc import AbstractChannel

from orderbot.config.settings import Settings
from tests.support.broker_tools import take_all, wait_depth
from tests.support.credentials import API_TOKEN, WEBHOOK_TOKEN
from tests.support.customers import HAPPY_PATH_RU, Customer, converse
from tests.support.fake_provider import FakeChat2Desk
from tests.support.processes import free_port, orderbot_cli, wait_http_ok

Spawn = Callable[..., Any]


async def test_no_secret_in_any_log_line_or_dead_letter(
    spawn: Spawn, fake: FakeChat2Desk, amqp: AbstractChannel, settings: Settings
) -> None:
    port = free_port()
    server = await spawn("server", HTTP_PORT=str(port), LOG_LEVEL="debug")
    worker = await spawn("worker", LOG_LEVEL="debug")
    base = f"http://127.0.0.1:{port}"
    await wait_http_ok(f"{base}/health/ready")
    url = f"{base}/webhook/chat2desk/{WEBHOOK_TOKEN}"
    async with aiohttp.ClientSession() as http:

        async def post(body: dict[str, Any]) -> int:
            async with http.post(url, json=body) as response:
                return response.status

        await converse(post, fake, Customer(), HAPPY_PATH_RU)
        async with http.post(f"{base}/webhook/chat2desk/{WEBHOOK_TOKEN}x", json={}) as refused:
            refused_body = await refused.text()
        fake.echo_headers_on_error = True
        fake.fail_next(401)  # refused, with our Authorization header echoed back
        assert await post(Customer().says("Hi")) == 200
        await wait_depth(amqp, settings.queue("dlq"), 1)

    [parked] = await take_all(amqp, settings.queue("dlq"))
    assert "[redacted]" in str(parked.headers["x-last-error"])
    assert await server.stop() == 0
    assert await worker.stop() == 0
    everything = server.logs() + worker.logs() + str(parked.headers) + refused_body
    assert "webhook_queued" in server.logs()
    assert "reply_refused" in worker.logs()
    assert API_TOKEN not in everything
    assert WEBHOOK_TOKEN not in everything


async def test_invalid_setting_fails_start_with_one_line_naming_it(
    config: dict[str, str], tmp_path: Path
) -> None:
    env = {**config, "WORKER_CONCURRENCY": "many"}
    code, _, stderr = await orderbot_cli("worker", env=env, cwd=tmp_path)

    assert code == 2
    assert stderr.count("\n") == 1
    assert "WORKER_CONCURRENCY" in stderr


async def test_missing_required_setting_fails_start_naming_it(
    config: dict[str, str], tmp_path: Path
) -> None:
    env = {**config, "CHAT2DESK_WEBHOOK_TOKEN": "", "TWILIO_AUTH_TOKEN": ""}
    code, _, stderr = await orderbot_cli("server", env=env, cwd=tmp_path)

    assert code == 2
    assert stderr.strip() == (
        "orderbot server: missing required setting: "
        "CHAT2DESK_WEBHOOK_TOKEN or TWILIO_AUTH_TOKEN + TWILIO_WHATSAPP_FROM"
    )
