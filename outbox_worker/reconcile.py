"""The reconciler's loop inside the outbox worker: a pass every RECONCILE_INTERVAL by
whichever outbox worker holds the lease (orderbot/recovery/lease.py).

It waits for the broker and the tenant directory, never for a pass: a provider that
hangs is bounded by the HTTP timeout, and the outbox consumer beside it is not held up.
The lease is renewed between the channels of a pass and between passes, so a pass
longer than RECONCILE_LEASE_TTL gives the lease up rather than run beside another.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from redis.asyncio import Redis

from orderbot.amqp.link import BrokerLink
from orderbot.config.settings import Settings
from orderbot.conversation.keys import Keys
from orderbot.errors import is_transient
from orderbot.recovery.lease import Lease
from orderbot.recovery.reconciler import Reconciler
from orderbot.runtime.resources import open_http
from orderbot.runtime.tasks import finish
from orderbot.runtime.waiting import sleep_unless_set
from orderbot.tenancy.directory import TenantDirectory

log = structlog.get_logger(__name__)


@contextlib.asynccontextmanager
async def reconcile_loop(
    settings: Settings,
    broker: BrokerLink,
    redis: Redis,
    tenants: TenantDirectory,
    stop: asyncio.Event,
) -> AsyncIterator[None]:
    if not settings.reconcile_enabled:
        yield
        return
    task = asyncio.create_task(_run(settings, broker, redis, tenants, stop), name="reconciler")
    try:
        yield
    finally:
        await finish(task)


async def _run(
    settings: Settings,
    broker: BrokerLink,
    redis: Redis,
    tenants: TenantDirectory,
    stop: asyncio.Event,
) -> None:
    lease = Lease(
        redis, Keys(settings.redis_key_prefix).reconcile_lease(), settings.reconcile_lease_ttl
    )
    interval = settings.reconcile_interval.total_seconds()
    tick = min(interval, settings.reconcile_lease_ttl.total_seconds() / 3)
    loop = asyncio.get_running_loop()
    async with open_http(settings) as session:
        reconciler = Reconciler(settings, redis, session, tenants, broker)
        holding = False
        next_pass = 0.0
        try:
            while not stop.is_set():
                try:
                    if broker.is_ready and tenants.loaded and await lease.hold():
                        if not holding:
                            log.info("reconcile_lease_taken", owner=lease.owner)
                            holding = True
                        if loop.time() >= next_pass:
                            next_pass = loop.time() + interval
                            report = await reconciler.run_pass(keep_lease=lease.hold)
                            if report.published or report.failures:
                                log.info(
                                    "reconcile_pass",
                                    published=report.published,
                                    found=len(report.found),
                                    failures=len(report.failures),
                                )
                    elif holding:
                        log.warning("reconcile_lease_lost", owner=lease.owner)
                        holding = False
                except Exception as exc:
                    # Never let the reconciler stop the outbox worker: the cursors did not
                    # move, and the next pass reads the same messages again.
                    if is_transient(exc):
                        log.warning("reconcile_pass_failed", error=repr(exc))
                    else:
                        log.exception("reconcile_pass_error")
                await sleep_unless_set(tick, stop)
        finally:
            if holding:
                with contextlib.suppress(Exception):
                    await lease.release()
