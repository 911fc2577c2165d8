"""Simulated customers order through the whole system while it is faulted; then the books
must balance: every accepted message applied once, one order per confirmed dialog, every
reply delivered (twice only where a fault can explain it), no queue left non-empty and
nothing in the DLQ but the poison that was put there.

Each fault has its own scenario, and one scenario has them all at once. Run longer with
RELIABILITY_SECONDS (`make soak`).
"""

from __future__ import annotations

import random
from urllib.parse import urlsplit

import asyncpg
import pytest
from aio_pika.abc import AbstractChannel
from redis.asyncio import Redis

from orderbot.config.settings import Settings
from tests.support.reliability.chaos_provider import ChaosChat2Desk
from tests.support.reliability.faults import rabbitmqctl_usable
from tests.support.reliability.knobs import load_seconds, report_every
from tests.support.reliability.scenario import DRAIN_LIMIT, Harness
from tests.support.reliability.system import System
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.reliability

# Seconds from a fault (or its end) until a new customer is answered; with faults
# overlapping in the `all` scenario one recovery may include another fault.
RECOVERY_LIMIT = 30.0
BROKER_OUTAGE_LOAD = 30.0  # seconds of load in the broker-outage scenario, at least

PROCESS_FAULTS = ("kill", "sigterm")
DEPENDENCY_FAULTS = (
    "broker",
    "redis_kill",
    "redis_outage",
    "postgres",
    "provider_fail",
    "provider_throttle",
    "provider_slow",
)
SCENARIOS: dict[str, tuple[tuple[str, ...], ...]] = {
    "kill": (("kill",),),
    "broker": (("broker",),),
    "redis": (("redis_kill", "redis_outage"),),
    "postgres": (("postgres",),),
    "provider": (("provider_fail", "provider_throttle", "provider_slow"),),
    "sigterm": (("sigterm",),),
    "broker-outage": (("broker_outage",),),
    "all": (PROCESS_FAULTS, DEPENDENCY_FAULTS),
}


@pytest.fixture
def harness(
    system: System,
    provider: ChaosChat2Desk,
    redis_proxy: TcpProxy,
    amqp_proxy: TcpProxy,
    redis: Redis,
    db: asyncpg.Connection,
    amqp: AbstractChannel,
    settings: Settings,
    rng: random.Random,
) -> Harness:
    return Harness(
        system, provider, redis_proxy, amqp_proxy, redis, db, amqp, settings, rng, report_every()
    )


# The load, then at most DRAIN_LIMIT to finish, plus starts and stops.
@pytest.mark.timeout(max(load_seconds(), BROKER_OUTAGE_LOAD) + DRAIN_LIMIT + 180)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_the_books_balance_under_faults(scenario: str, harness: Harness) -> None:
    injectors = SCENARIOS[scenario]
    if any("broker" in kinds for kinds in injectors):
        assert await rabbitmqctl_usable(), "broker-side closes need rabbitmqctl on the broker"

    seconds = load_seconds()
    if scenario == "broker-outage":
        # Only the server goes through the proxy: its webhooks must all be spooled and
        # answered 2xx, then drained; the load outlasts one outage.
        parts = urlsplit(harness.settings.amqp_url)
        through = parts._replace(
            netloc=f"{parts.username}:{parts.password}@127.0.0.1:{harness.amqp_proxy.port}"
        )
        harness.system.role_env["server"] = {"AMQP_URL": through.geturl()}
        seconds = max(seconds, BROKER_OUTAGE_LOAD)
    books = await harness.run(scenario, seconds, *injectors)

    assert not books.discrepancies(), "\n".join(books.discrepancies())
    assert books.lost == 0
    assert books.orders_extra == []
    assert books.messages > 0
    assert books.faults, "the scenario must have injected at least one fault"
    assert max(books.recovery_times) <= RECOVERY_LIMIT
