"""A library's log line (aiormq, aiohttp: the standard library's logging) is one JSON
object with the keys of our own lines, so collectors and the pm2 log check read both."""

from __future__ import annotations

import logging

import orjson
import pytest

from orderbot.config.settings import Settings
from orderbot.runtime.logging import configure_logging


def test_a_library_line_has_event_level_timestamp_and_role(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(settings, "worker")

    logging.getLogger("aiormq.channel").warning("Closing channel because RPC call cancelled")

    [line] = [line for line in capsys.readouterr().err.splitlines() if "Closing" in line]
    record = orjson.loads(line)
    assert record["event"] == "Closing channel because RPC call cancelled"
    assert (record["level"], record["logger"], record["role"]) == (
        "warning",
        "aiormq.channel",
        "worker",
    )
    assert record["timestamp"].endswith("Z")
