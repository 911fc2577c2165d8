"""Fixtures of the worker's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from orderbot.config.settings import Settings
from tests.support.postgres import orderbot_pool


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on the test's own database, for a step processor built in the test."""
    async with orderbot_pool(settings, min_size=1, max_size=2) as created:
        yield created
