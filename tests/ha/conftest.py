"""Fixtures of the high-availability scenarios: engine nodes started by the tests on ports
of their own (tests/support/ha/), and the reliability suite's whole system and books
pointed at them."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from aio_pika.abc import AbstractChannel
from redis.asyncio import Redis

from orderbot.config.settings import Settings
from orderbot.runtime.resources import open_redis
from tests.support.ha.redis_nodes import SentinelGroup, running_sentinel_group
from tests.support.processes import free_port
from tests.support.reliability.chaos_provider import ChaosChat2Desk, running_chaos_provider
from tests.support.reliability.scenario import Harness
from tests.support.reliability.system import System, process_env
from tests.support.services import Services
from tests.support.tcp_proxy import TcpProxy, running_proxy


@pytest.fixture
def config(config: dict[str, str]) -> dict[str, str]:
    """tests/conftest.py's settings with the reliability suite's longer outbox delays (a
    reply waiting behind another is looked at again every first delay)."""
    return {**config, "OUTBOX_DELAYS": "200ms,500ms,1s,2s"}


@pytest.fixture
def rng() -> random.Random:
    """Random moments; the seed is printed so a failing run can be replayed."""
    seed = int(os.environ.get("RELIABILITY_SEED", random.randrange(2**32)))
    print(f"RELIABILITY_SEED={seed}")
    return random.Random(seed)


@pytest.fixture
async def provider() -> AsyncIterator[ChaosChat2Desk]:
    async with running_chaos_provider() as chaos:
        yield chaos


@pytest.fixture
def sentinel_group() -> Iterator[SentinelGroup]:
    with running_sentinel_group() as group:
        yield group


@pytest.fixture
def sentinel_settings(settings: Settings, sentinel_group: SentinelGroup) -> Settings:
    """The test's settings, with Redis found through the group's Sentinels."""
    return settings.model_copy(
        update={
            "redis_sentinels": tuple(sentinel_group.sentinel_setting.split(",")),
            "redis_sentinel_master": sentinel_group.name,
        }
    )


@pytest.fixture
async def sentinel_redis(sentinel_settings: Settings) -> AsyncIterator[Redis]:
    """The test's own look into the group's master, following its failovers as the
    processes do."""
    async with open_redis(sentinel_settings) as client:
        yield client


@pytest.fixture
async def unused_proxies(services: Services) -> AsyncIterator[tuple[TcpProxy, TcpProxy]]:
    """The reliability harness's proxies; no fault of these scenarios cuts them."""
    async with (
        running_proxy(urlsplit(services.redis_url).port or 6379) as redis_proxy,
        running_proxy(urlsplit(services.amqp_url).port or 5672) as amqp_proxy,
    ):
        yield redis_proxy, amqp_proxy


@pytest.fixture
def sentinel_system(
    spawn: Callable[..., Any],
    provider: ChaosChat2Desk,
    sentinel_group: SentinelGroup,
    amqp: AbstractChannel,
    redis: Redis,
) -> System:
    """The whole system, its Redis the Sentinel group's master; not started."""
    env = process_env(
        {
            "REDIS_SENTINELS": sentinel_group.sentinel_setting,
            "REDIS_SENTINEL_MASTER": sentinel_group.name,
            "CHAT2DESK_API_URL": provider.url,
            "SEND_TIMEOUT": "500ms",
            "OUTBOX_MAX_ATTEMPTS": "100000",  # a failover is transient: nothing may give up
            "WEBHOOK_RATE_LIMIT_CUSTOMER": "1000000",
        }
    )
    return System(spawn=spawn, env=env, http_port=free_port())


@pytest.fixture
def sentinel_harness(
    sentinel_system: System,
    provider: ChaosChat2Desk,
    unused_proxies: tuple[TcpProxy, TcpProxy],
    sentinel_redis: Redis,
    db: asyncpg.Connection,
    amqp: AbstractChannel,
    settings: Settings,
    rng: random.Random,
) -> Harness:
    redis_proxy, amqp_proxy = unused_proxies
    return Harness(
        sentinel_system,
        provider,
        redis_proxy,
        amqp_proxy,
        sentinel_redis,
        db,
        amqp,
        settings,
        rng,
        report_every=3600.0,
    )
