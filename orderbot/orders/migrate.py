"""`orderbot migrate`: create the database if missing, then apply schema.sql.

schema.sql is idempotent, so migrate runs on every deploy; an advisory lock keeps
two deploys running it at once from interleaving. The lock is the transaction's
(pg_advisory_xact_lock) and nothing is kept prepared (statement_cache_size=0), so it
also runs through PgBouncer in transaction pooling mode.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from urllib.parse import unquote, urlsplit

import asyncpg
import structlog

log = structlog.get_logger(__name__)

_LOCK_ID = 0x0DE2B07


class SchemaMissing(Exception):
    """schema.sql is neither in the installed package nor in a source tree."""


def schema_sql() -> str:
    """schema.sql as installed with the package (the wheel carries it next to this
    module), else from the source tree this module runs from (an editable install)."""
    packaged = resources.files(__package__ or "orderbot.orders").joinpath("schema.sql")
    if packaged.is_file():
        return packaged.read_text()
    in_tree = Path(__file__).resolve().parents[2] / "schema.sql"
    if in_tree.is_file():
        return in_tree.read_text()
    raise SchemaMissing(f"schema.sql is not installed with orderbot (looked in {packaged})")


async def create_database_if_missing(database_url: str) -> bool:
    name = unquote(urlsplit(database_url).path.lstrip("/"))
    if not name:
        raise ValueError("DATABASE_URL must name the database, e.g. .../orderbot")
    try:
        conn = await asyncpg.connect(database_url, statement_cache_size=0)
    except asyncpg.InvalidCatalogNameError:
        pass
    else:
        await conn.close()
        return False
    admin = await asyncpg.connect(database_url, database="postgres", statement_cache_size=0)
    try:
        quoted = '"' + name.replace('"', '""') + '"'
        await admin.execute(f"CREATE DATABASE {quoted}")
    except asyncpg.DuplicateDatabaseError:
        return False
    finally:
        await admin.close()
    return True


async def migrate(database_url: str) -> None:
    """Create the database if missing, then apply the schema; a database this call
    created is dropped again when the schema cannot be applied, so a failed first
    migrate leaves nothing half-made behind."""
    schema = schema_sql()
    created = await create_database_if_missing(database_url)
    try:
        conn = await asyncpg.connect(database_url, statement_cache_size=0)
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
                await conn.execute(schema)
        finally:
            await conn.close()
    except BaseException:
        if created:
            await _drop_database(database_url)
        raise
    log.info("migrated", database_created=created)


async def _drop_database(database_url: str) -> None:
    name = unquote(urlsplit(database_url).path.lstrip("/"))
    admin = await asyncpg.connect(database_url, database="postgres", statement_cache_size=0)
    try:
        quoted = '"' + name.replace('"', '""') + '"'
        await admin.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
    finally:
        await admin.close()
    log.warning("migrate_failed_database_dropped", database=name)
