"""The processes' PostgreSQL pool gives connections back without a session reset round
trip, and still never hands out a transaction another caller left open."""

from __future__ import annotations

import asyncio

from orderbot.config.settings import Settings
from orderbot.runtime.resources import open_postgres


async def test_a_transaction_left_open_is_rolled_back_before_the_connection_is_reused(
    settings: Settings,
) -> None:
    async with open_postgres(settings, max_size=1, stop=asyncio.Event()) as pool:
        assert pool is not None
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")
            await conn.execute("CREATE TEMP TABLE left_open (x int) ON COMMIT DROP")
        async with pool.acquire() as conn:
            in_transaction = conn.is_in_transaction()
            table = await conn.fetchval("SELECT to_regclass('pg_temp.left_open')")
    assert not in_transaction
    assert table is None


async def test_a_released_connection_costs_no_reset_query(settings: Settings) -> None:
    queries: list[str] = []
    async with open_postgres(settings, max_size=1, stop=asyncio.Event()) as pool:
        assert pool is not None
        async with pool.acquire() as conn:
            conn.add_query_logger(lambda record: queries.append(record.query))
            await conn.fetchval("SELECT 1")
        async with pool.acquire() as conn:
            await conn.fetchval("SELECT 2")
    assert queries == ["SELECT 1", "SELECT 2"]
