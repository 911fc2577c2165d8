"""The outbox worker process: wiring of its resources, and its run until stopped."""

from __future__ import annotations

import asyncio
import contextlib

from orderbot.amqp.consumer import Consumer
from orderbot.amqp.link import BrokerLink
from orderbot.amqp.queue_depths import watch_queue_depths
from orderbot.config.settings import Settings
from orderbot.conversation.reply_order import reply_order_for
from orderbot.delivery.senders import open_senders
from orderbot.history.events import publisher
from orderbot.history.writer import running_writer, writer_for
from orderbot.orders.live import live_events
from orderbot.runtime.ops import dependency_probes, serve_ops
from orderbot.runtime.resources import open_redis
from orderbot.runtime.roles import OUTBOX_WORKER
from orderbot.tenancy.directory import open_tenant_directory
from outbox_worker.history_purge import history_purge_loop
from outbox_worker.reconcile import reconcile_loop
from outbox_worker.relay import notification_relay
from outbox_worker.retry import OutboxDelivery


async def run_outbox_worker(settings: Settings, stop: asyncio.Event) -> None:
    async with contextlib.AsyncExitStack() as stack:
        broker = await stack.enter_async_context(BrokerLink(settings, "outbox_worker"))
        redis = await stack.enter_async_context(open_redis(settings))
        tenants = await stack.enter_async_context(open_tenant_directory(settings, "outbox_worker"))
        senders = await stack.enter_async_context(open_senders(settings, redis, tenants))
        history = await stack.enter_async_context(
            running_writer(writer_for(settings, publisher(live_events(redis, settings))), settings)
        )
        consumer = Consumer(
            broker,
            broker.topology.outbox,
            OutboxDelivery(
                broker=broker,
                senders=senders,
                order=reply_order_for(redis, settings),
                delays=settings.outbox_delays,
                max_attempts=settings.outbox_max_attempts,
                max_age=settings.outbox_max_age,
                stop=stop,
                history=history,
            ),
            prefetch=settings.worker_concurrency,
            shutdown_timeout=settings.shutdown_timeout.total_seconds(),
        )
        await stack.enter_async_context(
            serve_ops(
                settings,
                OUTBOX_WORKER,
                dependency_probes(broker=broker, redis=redis, pool=None),
            )
        )
        await stack.enter_async_context(watch_queue_depths(broker))
        await stack.enter_async_context(notification_relay(settings, broker, redis, tenants, stop))
        await stack.enter_async_context(reconcile_loop(settings, broker, redis, tenants, stop))
        await stack.enter_async_context(history_purge_loop(settings, stop))
        await consumer.run(stop)
