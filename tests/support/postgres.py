"""Pools the tests hand to orderbot's classes, opened as orderbot's processes open theirs
(DATABASE_URL and DATABASE_STATEMENT_CACHE_SIZE), so that they take the same path: through
PgBouncer when the run goes through one."""

from __future__ import annotations

from typing import Any

import asyncpg

from orderbot.config.settings import Settings
from orderbot.runtime.resources import postgres_options


def orderbot_pool(settings: Settings, **options: Any) -> asyncpg.Pool:
    """Use as `async with orderbot_pool(settings, max_size=2) as pool:`."""
    return asyncpg.create_pool(settings.database_url, **postgres_options(settings), **options)
