"""Offered load above capacity: the queue fills to its bound, the edge spool takes what
the queue refuses (on disk, not in memory) up to SPOOL_MAX_BYTES, and only past that is
a message refused (503, so the provider retries); the server's memory stays flat, the
queue (each partition) never holds more than its bound, and everything accepted is
processed afterwards.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aio_pika.abc import AbstractChannel
from redis.asyncio import Redis

from orderbot.config.settings import Settings
from tests.support.broker_tools import Queues, depth, messages_queues
from tests.support.credentials import WEBHOOK_TOKEN
from tests.support.customers import Customer, expected_replies
from tests.support.reliability.books import record_lines
from tests.support.reliability.chaos_provider import ChaosChat2Desk
from tests.support.reliability.load import AppliedWatcher
from tests.support.reliability.system import System

pytestmark = pytest.mark.reliability

OVERLOAD_SECONDS = float(os.environ.get("RELIABILITY_OVERLOAD_SECONDS", 30))
MAX_LENGTH = 200  # the `messages` bound of this test
SPOOL_MAX_BYTES = 256 * 1024  # a few hundred messages on disk behind it
POSTERS = 64  # concurrent webhook calls, far more than the worker's 4 steps in flight
RSS_GROWTH_LIMIT_MB = 64.0
DRAIN_TIMEOUT = 120.0


@dataclass
class Pressure:
    statuses: Counter[str] = field(default_factory=Counter)
    accepted: dict[str, str] = field(default_factory=dict)  # message id -> client id
    deepest: int = 0
    rss_mb: list[float] = field(default_factory=list)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def offer(session: aiohttp.ClientSession, url: str, until: float, seen: Pressure) -> None:
    """New customers say hello back to back; a refused one is dropped, as a give-up."""
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        customer = Customer()
        body = customer.says("Hello")
        try:
            async with session.post(url, json=body) as response:
                seen.statuses[str(response.status)] += 1
                if response.status == 200:
                    seen.accepted[str(body["message_id"])] = customer.client_id
        except (aiohttp.ClientError, TimeoutError):
            seen.statuses["connection error"] += 1


async def watch(
    amqp: AbstractChannel, queue: Queues, pid: int, until: float, seen: Pressure
) -> None:
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        names = (queue,) if isinstance(queue, str) else queue
        for name in names:  # the bound holds per partition
            seen.deepest = max(seen.deepest, await depth(amqp, name))
        seen.rss_mb.append(rss_mb(pid))
        await asyncio.sleep(0.25)  # the sampling period


async def test_overload_past_queue_and_spool_is_refused_and_all_accepted_is_processed(
    system: System,
    provider: ChaosChat2Desk,
    redis: Redis,
    amqp: AbstractChannel,
    settings: Settings,
) -> None:
    system.env = {
        **system.env,
        "MESSAGES_MAX_LENGTH": str(MAX_LENGTH),
        "SPOOL_MAX_BYTES": str(SPOOL_MAX_BYTES),
        "WORKER_CONCURRENCY": "4",
    }
    system.worker_count = 1
    provider.latency = 0.05  # with 4 steps in flight: at most 80 steps a second
    await system.start()
    assert system.server is not None
    url = f"{system.base_url}/webhook/chat2desk/{WEBHOOK_TOKEN}"
    seen = Pressure()
    loop = asyncio.get_running_loop()
    until = loop.time() + OVERLOAD_SECONDS
    started = time.monotonic()
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=POSTERS), timeout=aiohttp.ClientTimeout(total=30)
    ) as session:
        await asyncio.gather(
            watch(amqp, messages_queues(settings), system.server.pid, until, seen),
            *(offer(session, url, until, seen) for _ in range(POSTERS)),
        )
    offered_for = time.monotonic() - started
    server_alive = system.server.process is not None and system.server.process.returncode is None

    drain_started = time.monotonic()
    watcher = AppliedWatcher(redis, settings.redis_key_prefix, settings.tenant)
    applied = await asyncio.gather(
        *(watcher.wait(m, timeout=DRAIN_TIMEOUT, client_id=c) for m, c in seen.accepted.items())
    )
    await watcher.close()
    greeting = expected_replies(["Hello"])
    await provider.wait_for(
        lambda: all(provider.texts_for(c) for c in seen.accepted.values()), DRAIN_TIMEOUT
    )
    drained_in = time.monotonic() - drain_started
    exits = await system.stop_all()
    left = await depth(amqp, messages_queues(settings))
    parked = await depth(amqp, settings.queue("dlq"))
    warm = seen.rss_mb[len(seen.rss_mb) // 6 :]  # after start-up and the first burst
    offered = sum(seen.statuses.values())
    record_lines(
        "overload",
        [
            f"overload: {offered} webhooks in {offered_for:.0f}s ({offered / offered_for:.0f}/s) "
            f"from {POSTERS} concurrent callers; answers "
            + ", ".join(f"{k}: {v}" for k, v in sorted(seen.statuses.items())),
            f"  accepted {len(seen.accepted)} ({len(seen.accepted) / offered_for:.0f}/s), "
            f"applied {sum(applied)}, drained in {drained_in:.1f}s; deepest queue "
            f"{seen.deepest} (bound {MAX_LENGTH} a partition); "
            f"server RSS {min(warm):.0f}-{max(warm):.0f} MB",
        ],
    )

    assert server_alive
    assert set(seen.statuses) <= {"200", "503"}
    assert seen.statuses["503"] > 0, "the load never exceeded queue and spool together"
    # A quorum queue applies its bound as publishes reach it: those already on their way
    # when it fills are still taken, so it overshoots by at most the publishes in flight.
    assert seen.deepest <= MAX_LENGTH + POSTERS
    assert max(warm) - min(warm) <= RSS_GROWTH_LIMIT_MB
    assert all(applied), "an accepted message was never applied"
    assert all(provider.texts_for(c) == greeting for c in seen.accepted.values())
    assert (left, parked) == (0, 0)
    assert [e.status for e in exits] == [0, 0, 0]
