"""Fields bound for a block (a step's correlation id, tenant, customer) are on every line
logged inside it, in the order structlog's bound_contextvars gave them (after the line's
own keys and the process's role), and on none after.

Run in a process of its own: logging is configured for the whole process."""

from __future__ import annotations

import subprocess
import sys

import orjson

SCRIPT = """
import structlog
from orderbot.config.settings import Settings
from orderbot.runtime.logging import bound_fields, configure_logging
configure_logging(Settings(_env_file=None, log_format="json"), "worker", cache_loggers=True)
log = structlog.get_logger("step")
with bound_fields(correlation_id="m1", tenant="t1"):
    with bound_fields(client_id="42"):
        log.warning("inner", detail="x")
    log.warning("outer")
log.warning("after")
"""


def test_bound_fields_are_on_the_lines_of_their_block_only() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )

    inner, outer, after = (orjson.loads(line) for line in done.stderr.splitlines())
    assert list(inner)[:6] == ["detail", "event", "role", "correlation_id", "tenant", "client_id"]
    assert (inner["event"], inner["client_id"], inner["detail"]) == ("inner", "42", "x")
    assert (outer["event"], outer["correlation_id"]) == ("outer", "m1")
    assert "client_id" not in outer
    assert after["event"] == "after"
    assert not {"correlation_id", "tenant", "client_id"} & set(after)
