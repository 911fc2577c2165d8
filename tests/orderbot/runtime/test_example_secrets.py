"""A process refuses to serve with the well-known secrets of .env.example, except on a
development machine (ORDERBOT_DEV, which `make run` sets)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from orderbot.config.settings import ConfigError, Settings, refuse_example_secrets


def test_the_example_webhook_token_is_refused_outside_development() -> None:
    settings = Settings(_env_file=None, chat2desk_webhook_token="dev-webhook-token")

    with pytest.raises(ConfigError, match="CHAT2DESK_WEBHOOK_TOKEN"):
        refuse_example_secrets(settings)


def test_the_example_web_chat_secret_is_refused_outside_development() -> None:
    settings = Settings(_env_file=None, webchat_secret="dev-webchat-cookie-secret")

    with pytest.raises(ConfigError, match="WEBCHAT_SECRET"):
        refuse_example_secrets(settings)


def test_the_web_chat_secret_is_one_for_the_log_redactor() -> None:
    settings = Settings(_env_file=None, webchat_secret="a-web-chat-secret-1")
    assert "a-web-chat-secret-1" in settings.secrets()


def test_the_example_secrets_are_allowed_on_a_development_machine() -> None:
    settings = Settings(
        _env_file=None,
        chat2desk_webhook_token="dev-webhook-token",
        operator_api_key="dev-operator-api-key",
        orderbot_dev=True,
    )

    refuse_example_secrets(settings)


async def test_a_server_started_with_the_example_key_exits_2_with_one_line(
    config: dict[str, str], tmp_path: Path
) -> None:
    env = {**os.environ, **config, "OPERATOR_API_KEY": "dev-operator-api-key"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 30)

    assert process.returncode == 2
    assert stderr.decode().strip().splitlines() == [
        "orderbot server: OPERATOR_API_KEY still holds the example value of .env.example; set a "
        "secret of your own (or ORDERBOT_DEV=1 on a development machine, as `make run` does)"
    ]
