"""Fixtures of the reliability suite: the whole system as real processes, Redis behind a
proxy the test can cut, a Chat2Desk that can be told to misbehave, and the books.

RELIABILITY_SECONDS sets how long each scenario offers load (default: the short CI
version); RELIABILITY_REPORT_EVERY how often a long run prints its running books.
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from _pytest.terminal import TerminalReporter
from aio_pika.abc import AbstractChannel
from redis.asyncio import Redis

from orderbot.config.settings import Settings
from tests.support.processes import free_port
from tests.support.reliability.books import RECORDED
from tests.support.reliability.chaos_provider import ChaosChat2Desk, running_chaos_provider
from tests.support.reliability.system import System, process_env
from tests.support.services import Services
from tests.support.tcp_proxy import TcpProxy, running_proxy


@pytest.fixture
def config(config: dict[str, str]) -> dict[str, str]:
    """tests/conftest.py's settings, with longer outbox delays: a reply queued behind a
    customer's earlier one is looked at again every first delay, and at 50 ms a backlog
    of them would keep the outbox busy with nothing but that."""
    return {**config, "OUTBOX_DELAYS": "200ms,500ms,1s,2s"}


@pytest.fixture
def rng() -> random.Random:
    """Random moments and choices; the seed is printed so a failing run can be replayed."""
    seed = int(os.environ.get("RELIABILITY_SEED", random.randrange(2**32)))
    print(f"RELIABILITY_SEED={seed}")
    return random.Random(seed)


@pytest.fixture
async def provider() -> AsyncIterator[ChaosChat2Desk]:
    async with running_chaos_provider() as chaos:
        yield chaos


@pytest.fixture
async def redis_proxy(services: Services) -> AsyncIterator[TcpProxy]:
    async with running_proxy(urlsplit(services.redis_url).port or 6379) as proxy:
        yield proxy


@pytest.fixture
async def amqp_proxy(services: Services) -> AsyncIterator[TcpProxy]:
    """A proxy the server may reach the broker through (the broker-outage scenario)."""
    async with running_proxy(urlsplit(services.amqp_url).port or 5672) as proxy:
        yield proxy


@pytest.fixture
def system_env(
    services: Services, provider: ChaosChat2Desk, redis_proxy: TcpProxy
) -> dict[str, str]:
    """What the system's processes run with, on top of tests/conftest.py's `config`."""
    redis = urlsplit(services.redis_url)
    return process_env(
        {
            "REDIS_URL": urlunsplit(redis._replace(netloc=f"127.0.0.1:{redis_proxy.port}")),
            "CHAT2DESK_API_URL": provider.url,
            "SEND_TIMEOUT": "500ms",  # a stalled provider is a timeout, not a hang
            "OUTBOX_MAX_ATTEMPTS": "100000",  # outages here are transient: nothing may give up
            "WEBHOOK_RATE_LIMIT_CUSTOMER": "1000000",
        }
    )


@pytest.fixture
def system(
    spawn: Callable[..., Any],
    system_env: dict[str, str],
    amqp: AbstractChannel,
    redis: Redis,
    settings: Settings,
) -> System:
    """Not started: a test starts it (with its own overrides) when it is ready."""
    return System(spawn=spawn, env=system_env, http_port=free_port())


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    if not RECORDED:
        return
    terminalreporter.section("reliability books")
    for lines in RECORDED:
        for line in lines:
            terminalreporter.write_line(line)
