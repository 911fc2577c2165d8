"""A library's log line (aiormq, aiohttp: the standard library's logging) is one JSON
object with the keys of our own lines, so collectors and the pm2 log check read both.

Run in a process of its own: logging is configured for the whole process, and the
test session's own logging must stay as it is."""

from __future__ import annotations

import subprocess
import sys

import orjson

SCRIPT = """
import logging
from orderbot.config.settings import Settings
from orderbot.runtime.logging import configure_logging
configure_logging(Settings(_env_file=None, log_format="json"), "worker")
logging.getLogger("aiormq.channel").warning("Closing channel because RPC call cancelled")
"""


def test_a_library_line_has_event_level_timestamp_and_role() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )

    [line] = [line for line in done.stderr.splitlines() if "Closing" in line]
    record = orjson.loads(line)
    assert record["event"] == "Closing channel because RPC call cancelled"
    assert (record["level"], record["logger"], record["role"]) == (
        "warning",
        "aiormq.channel",
        "worker",
    )
    assert record["timestamp"].endswith("Z")
