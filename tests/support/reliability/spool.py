"""What the server's edge spool still holds: accepted messages not yet on the broker.

Read from the spool files themselves once the servers are stopped (a live server holds
its file's lock and its own count); the books count it with the queues, so a spool that
never drained shows as work left rather than as steps lost with nothing queued."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from server.spool import SUFFIX


def spooled_messages(directory: Path) -> int:
    """Rows in every spool file of `directory` (0 when there is none)."""
    total = 0
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        connection = sqlite3.connect(path)
        try:
            (count,) = connection.execute("SELECT count(*) FROM spool").fetchone()
        except sqlite3.OperationalError:  # created, its table not yet
            count = 0
        finally:
            connection.close()
        total += int(count)
    return total
