"""The relay of the status-notification outbox: news whose handler did not publish it.

The API handler publishes a status change's news right after its commit. When it cannot
(the broker or Redis was down, the process died in between), the history row stays pending
and this loop, running in every outbox worker, publishes it once it is a few seconds old:
old enough that the handler has had its chance, so the two rarely compete (and when they do,
row locks keep them from both publishing one row). Only the news of the tenants in this
process's directory: another deployment's rows in the same database are left to it. It needs
PostgreSQL, but waits for it in the background: the outbox worker keeps delivering replies
while the database is away.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

import structlog
from redis.asyncio import Redis

from orderbot.amqp.link import BrokerLink
from orderbot.config.settings import Settings
from orderbot.conversation.owed_ratings import OwedRatings
from orderbot.conversation.reply_order import reply_order_for
from orderbot.errors import is_transient
from orderbot.orders.notifications import StatusNotifier
from orderbot.runtime.resources import open_postgres
from orderbot.runtime.tasks import finish
from orderbot.runtime.waiting import sleep_unless_set
from orderbot.tenancy.directory import TenantDirectory

log = structlog.get_logger(__name__)

GRACE = timedelta(seconds=3)  # how long a fresh row is left to its handler
INTERVAL = timedelta(seconds=1)  # between scans; a scan is one indexed query when idle
BATCH = 100


@contextlib.asynccontextmanager
async def notification_relay(
    settings: Settings,
    broker: BrokerLink,
    redis: Redis,
    tenants: TenantDirectory,
    stop: asyncio.Event,
) -> AsyncIterator[None]:
    """Run the relay beside the outbox consumer until ``stop``."""
    task = asyncio.create_task(
        _run(settings, broker, redis, tenants, stop), name="notification-relay"
    )
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
    try:
        await _relay(settings, broker, redis, tenants, stop)
    except Exception:
        # The outbox consumer goes on; the pending rows wait for a restarted process.
        log.exception("notification_relay_stopped")


async def _relay(
    settings: Settings,
    broker: BrokerLink,
    redis: Redis,
    tenants: TenantDirectory,
    stop: asyncio.Event,
) -> None:
    async with open_postgres(settings, max_size=2, stop=stop) as pool:
        if pool is None:
            return
        notifier = StatusNotifier(
            pool=pool,
            broker=broker,
            order=reply_order_for(redis, settings),
            owed=OwedRatings(redis, settings.redis_key_prefix),
        )
        log.info("notification_relay_started", grace=str(GRACE))
        while not stop.is_set():
            if broker.is_ready:
                await _scan(notifier, tenants)
            await sleep_unless_set(INTERVAL.total_seconds(), stop)


async def _scan(notifier: StatusNotifier, tenants: TenantDirectory) -> None:
    """Publish every pending row of our tenants old enough; a failure waits for the next scan."""
    slugs = [tenant.slug for tenant in tenants.all()]
    try:
        while (
            published := await notifier.notify_pending(older_than=GRACE, tenants=slugs, limit=BATCH)
        ) > 0:
            log.info("status_notifications_relayed", count=published)
            if published < BATCH:
                return
    except Exception as exc:
        # Never let the relay stop the outbox worker: the rows stay pending and the next
        # scan tries again. A bug (not an outage) is logged loudly, with its traceback.
        if is_transient(exc):
            log.warning("notification_relay_failed", error=repr(exc))
        else:
            log.exception("notification_relay_error")
