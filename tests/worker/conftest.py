"""Fixtures of the worker's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on the test's own database, for a step processor built in the test."""
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as created:
        yield created
