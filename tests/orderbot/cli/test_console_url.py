"""What `orderbot run` says about the operator console."""

from __future__ import annotations

from collections.abc import Callable

from orderbot.cli.main import console_url
from orderbot.config.settings import Settings
from tests.support.credentials import CONSOLE_SECRET


def test_run_names_the_console_under_the_public_url_when_it_is_on(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(console_session_secret=CONSOLE_SECRET)

    assert console_url(settings) == "https://bot.example.com/console/"


def test_run_names_the_local_address_without_a_public_url(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        console_session_secret=CONSOLE_SECRET, public_base_url=None, http_host="0.0.0.0"
    )

    assert console_url(settings) == f"http://localhost:{settings.http_port}/console/"


def test_run_says_nothing_of_a_console_that_is_off(make_settings: Callable[..., Settings]) -> None:
    assert console_url(make_settings(console_session_secret=None)) is None
    assert (
        console_url(make_settings(console_session_secret=CONSOLE_SECRET, operator_api_key=""))
        is None
    )
