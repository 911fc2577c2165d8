"""The books' look into the edge spool: what a stopped server left in it."""

from __future__ import annotations

from pathlib import Path

from server.spool import open_spool
from tests.support.reliability.spool import spooled_messages


async def test_the_messages_a_server_left_in_its_spool_are_counted(tmp_path: Path) -> None:
    async with open_spool(tmp_path, "edge-1", max_bytes=10_000) as spool:
        await spool.put("messages.0", "m-1", b"{}")
        await spool.put("messages.1", "m-2", b"{}")
    async with open_spool(tmp_path, "edge-2", max_bytes=10_000):
        pass

    assert spooled_messages(tmp_path) == 2


def test_no_spool_counts_nothing(tmp_path: Path) -> None:
    assert spooled_messages(tmp_path / "never-made") == 0
