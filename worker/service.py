"""The worker process: wiring of its resources, and its run until stopped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from dialog import DialogRules, PhoneRule
from orderbot.amqp.link import BrokerLink
from orderbot.amqp.partitions import PartitionedConsumer
from orderbot.amqp.queue_depths import watch_queue_depths
from orderbot.config.settings import Settings
from orderbot.conversation.dialog_store import DialogStore
from orderbot.conversation.handoff import Handoffs, OwnMessages
from orderbot.conversation.locks import ClientLocks
from orderbot.conversation.reply_order import reply_order_for
from orderbot.conversation.roll_call import RedisRollCall
from orderbot.delivery.handoff import Operators
from orderbot.delivery.senders import open_senders
from orderbot.history.events import publisher
from orderbot.history.writer import running_writer, writer_for
from orderbot.orders.live import live_events
from orderbot.orders.store import OrderStore
from orderbot.runtime.ops import dependency_probes, serve_ops
from orderbot.runtime.resources import open_http, open_postgres, open_redis
from orderbot.runtime.roles import WORKER
from orderbot.tenancy.directory import TenantDirectory, open_tenant_directory
from worker.handoff import HandoffDesk
from worker.rating import rating_desk
from worker.replies import ReplyDispatcher
from worker.step import MessageProcessor, customer_budget

log = structlog.get_logger(__name__)


_Own = tuple[str | None, tuple[str, ...] | None, str | None, int | None]


def dialog_rules(
    settings: Settings,
    region: str | None = None,
    allowed: tuple[str, ...] | None = None,
    business_name: str | None = None,
    delivery_minutes: int | None = None,
) -> DialogRules:
    """The settings' rules; the arguments are a tenant's own, where it has them."""
    return DialogRules(
        phone=PhoneRule(
            region=region or settings.phone_region,
            allowed=frozenset(settings.phone_regions_allowed if allowed is None else allowed),
        ),
        business_name=business_name or settings.business_name,
        delivery_minutes=delivery_minutes or settings.delivery_minutes,
    )


def tenant_rules(settings: Settings, tenants: TenantDirectory) -> Callable[[str], DialogRules]:
    """A tenant's rules: its own phone regions and texts, else the settings'. Built once
    for each."""
    default = dialog_rules(settings)  # a bad setting fails here, at start
    built: dict[_Own, DialogRules] = {(None, None, None, None): default}

    def rules(slug: str) -> DialogRules:
        tenant = tenants.get(slug)
        own: _Own = (
            (
                tenant.phone_region,
                tenant.phone_regions_allowed,
                tenant.business_name,
                tenant.delivery_minutes,
            )
            if tenant
            else (None, None, None, None)
        )
        if own not in built:
            try:
                built[own] = dialog_rules(settings, *own)
            except ValueError as exc:  # a row written past the CLI's checks
                log.error("tenant_rules_invalid", tenant=slug, error=str(exc))
                built[own] = default
        return built[own]

    return rules


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    async with contextlib.AsyncExitStack() as stack:
        broker = await stack.enter_async_context(BrokerLink(settings, "worker"))
        redis = await stack.enter_async_context(open_redis(settings))
        pool = await stack.enter_async_context(
            open_postgres(settings, max_size=settings.worker_concurrency, stop=stop)
        )
        if pool is None:
            return
        tenants = await stack.enter_async_context(open_tenant_directory(settings, "worker"))
        # Like PostgreSQL above: without the tenants read, no reply could be sent.
        if not await tenants.wait_loaded(stop):
            return
        senders = await stack.enter_async_context(open_senders(settings, redis, tenants))
        session = await stack.enter_async_context(open_http(settings))
        events = live_events(redis, settings)
        history = await stack.enter_async_context(
            running_writer(writer_for(settings, publisher(events)), settings, pool)
        )
        prefix = settings.redis_key_prefix
        locks = ClientLocks(redis, prefix, settings.lock_timeout.total_seconds())
        replies = ReplyDispatcher(
            broker,
            senders,
            reply_order_for(redis, settings),
            attempts=settings.send_attempts,
            backoff=settings.send_backoff,
            history=history,
        )
        consumer = PartitionedConsumer(
            broker,
            RedisRollCall(redis, prefix, broker.topology.messages),
            MessageProcessor(
                broker=broker,
                dialogs=DialogStore(
                    redis,
                    prefix,
                    state_ttl=settings.dialog_ttl,
                    dedupe_ttl=settings.dedupe_ttl,
                ),
                locks=locks,
                orders=OrderStore(pool),
                replies=replies,
                rules=tenant_rules(settings, tenants),
                ratings=rating_desk(settings, redis, pool, events),
                handoff=HandoffDesk(
                    handoffs=Handoffs(redis, prefix, ttl=settings.handoff_ttl),
                    own=OwnMessages(redis, prefix),
                    operators=Operators(settings, session, tenants),
                    replies=replies,
                    locks=locks,
                    words=settings.handoff_words,
                    events=events,
                ),
                budget=customer_budget(settings, tenants),
                concurrency=settings.worker_concurrency,
                stop=stop,
                history=history,
                events=events,
            ),
            prefetch=settings.worker_concurrency,
            shutdown_timeout=settings.shutdown_timeout.total_seconds(),
            heartbeat=settings.worker_heartbeat,
        )
        await stack.enter_async_context(
            serve_ops(
                settings,
                WORKER,
                dependency_probes(broker=broker, redis=redis, pool=pool),
            )
        )
        await stack.enter_async_context(watch_queue_depths(broker))
        await consumer.run(stop)
