"""The first thing a role's process does, before the heavy imports.

Until a role's event loop takes SIGTERM over, the signal's default action kills the
process, so pm2, systemd or a test stopping it during start-up (a second or more of
imports and settings) saw a death by signal instead of the exit 0 of guarantee 7.
From the first line, SIGTERM means what Ctrl-C means; nothing is in flight yet.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

RoleMain = Callable[[], int]


def run_role_main(load: Callable[[], RoleMain]) -> int:
    """Import the role (`load`) and run it; stopped during start-up, exit 0."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return load()()
    except KeyboardInterrupt:  # interrupted before start-up finished: nothing was in flight
        return 0
