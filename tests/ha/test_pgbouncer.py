"""Specification: orderbot works through PgBouncer in transaction pooling mode.

In transaction mode each transaction may run on another server connection, so a named
prepared statement made on one is missing on the next: asyncpg's statement cache must
be off (DATABASE_STATEMENT_CACHE_SIZE=0), and LISTEN, which belongs to a session, goes
to a direct connection (DATABASE_LISTEN_URL). The suite's modules that use PostgreSQL
most (the order store and lifecycle, the operator API, the worker pipeline with real
worker processes, the tenants directory) then run through a PgBouncer of their own
(ORDERBOT_TEST_PGBOUNCER=1, tests/conftest.py) and must pass, their traffic counted by
PgBouncer itself.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from orderbot.config.settings import Settings
from orderbot.runtime.resources import open_postgres
from tests.support.pgbouncer import PgBouncer, running_pgbouncer
from tests.support.services import Services

pytestmark = pytest.mark.ha

ROOT = Path(__file__).resolve().parents[2]
THROUGH_PGBOUNCER = [
    "tests/orderbot/orders",
    "tests/server/test_operator_api.py",
    "tests/worker/test_idempotency.py",
    "tests/worker/test_processes.py",
    "tests/orderbot/tenancy",
]
CONCURRENT_QUERIES = 200


@pytest.fixture
def own_pgbouncer(services: Services) -> Iterator[PgBouncer]:
    with running_pgbouncer(services.postgres_url) as bouncer:
        yield bouncer


async def _queries_through(settings: Settings) -> list[int]:
    """Concurrent parametrised queries on the processes' own pool: each is prepared, and
    a pool of several connections hands them to several server connections."""
    stop = asyncio.Event()
    async with open_postgres(settings, max_size=4, stop=stop) as pool:
        assert pool is not None

        async def one(i: int) -> int:
            value: int = await pool.fetchval("SELECT $1::int + 1", i)
            return value

        answers = await asyncio.gather(
            *(one(i) for i in range(CONCURRENT_QUERIES)), return_exceptions=True
        )
    values: list[int] = []
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer
        values.append(answer)
    return values


async def test_the_processes_pool_works_through_pgbouncer_without_a_statement_cache(
    settings: Settings, database_url: str, own_pgbouncer: PgBouncer
) -> None:
    through = settings.model_copy(
        update={
            "database_url": own_pgbouncer.url(database_url),
            "database_statement_cache_size": 0,
        }
    )
    before = own_pgbouncer.transactions()

    answers = await _queries_through(through)

    assert answers == [i + 1 for i in range(CONCURRENT_QUERIES)]
    assert own_pgbouncer.transactions() - before >= CONCURRENT_QUERIES


async def test_with_asyncpg_s_statement_cache_the_same_queries_fail_through_pgbouncer(
    settings: Settings, database_url: str, own_pgbouncer: PgBouncer
) -> None:
    """Why the setting exists: asyncpg's default names its prepared statements."""
    through = settings.model_copy(update={"database_url": own_pgbouncer.url(database_url)})
    assert through.database_statement_cache_size > 0

    with pytest.raises(
        (asyncpg.InvalidSQLStatementNameError, asyncpg.DuplicatePreparedStatementError)
    ):
        await _queries_through(through)


@pytest.mark.timeout(900)
async def test_the_suite_s_database_modules_pass_through_pgbouncer_in_transaction_mode(
    tmp_path: Path,
) -> None:
    report = tmp_path / "pgbouncer-transactions"
    env = {
        **os.environ,
        "ORDERBOT_TEST_PGBOUNCER": "1",
        "ORDERBOT_TEST_PGBOUNCER_REPORT": str(report),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        *THROUGH_PGBOUNCER,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    counted = report.read_text().strip() if report.exists() else "no count of"
    print(f"through PgBouncer: {' '.join(text.strip().splitlines()[-1:])}; {counted} transactions")

    assert process.returncode == 0, text[-6000:]
    assert int(counted) > 0
