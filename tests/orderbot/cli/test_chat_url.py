"""`orderbot run` (and so `make run`) says where the web chat is, when it is on."""

from __future__ import annotations

from orderbot.cli.main import chat_url
from orderbot.config.settings import Settings


def test_the_chat_url_is_the_local_port_for_a_server_on_every_address() -> None:
    settings = Settings(_env_file=None, webchat_secret="a-web-chat-secret-1", http_port=8080)
    assert chat_url(settings) == "http://localhost:8080/chat"


def test_the_chat_url_is_the_public_one_behind_a_proxy() -> None:
    settings = Settings(
        _env_file=None,
        webchat_secret="a-web-chat-secret-1",
        public_base_url="https://bot.example.com/",
    )
    assert chat_url(settings) == "https://bot.example.com/chat"


def test_no_chat_url_while_the_chat_is_off() -> None:
    assert chat_url(Settings(_env_file=None, webchat_secret=None)) is None
