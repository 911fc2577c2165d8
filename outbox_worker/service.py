"""The outbox worker process: wiring of its resources, and its run until stopped."""

from __future__ import annotations

import asyncio
import contextlib

from orderbot.broker import BrokerLink
from orderbot.consumer import Consumer
from orderbot.ops_server import serve_ops
from orderbot.providers.registry import open_senders
from orderbot.queue_stats import watch_queue_depths
from orderbot.reply_order import reply_order_for
from orderbot.resources import open_redis
from orderbot.settings import Settings
from orderbot.tenants import open_tenant_directory
from outbox_worker.relay import notification_relay
from outbox_worker.retry import OutboxDelivery

REQUIRED = (
    ("chat2desk_api_token",),
    ("twilio_account_sid", "twilio_auth_token", "twilio_whatsapp_from"),
)


async def run_outbox_worker(settings: Settings, stop: asyncio.Event) -> None:
    async with contextlib.AsyncExitStack() as stack:
        broker = await stack.enter_async_context(BrokerLink(settings, "outbox_worker"))
        redis = await stack.enter_async_context(open_redis(settings))
        tenants = await stack.enter_async_context(open_tenant_directory(settings, "outbox_worker"))
        senders = await stack.enter_async_context(open_senders(settings, redis, tenants))
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
            ),
            prefetch=settings.worker_concurrency,
            shutdown_timeout=settings.shutdown_timeout.total_seconds(),
        )
        await stack.enter_async_context(
            serve_ops(settings, default_port=9102, broker=broker, redis=redis, pool=None)
        )
        await stack.enter_async_context(watch_queue_depths(broker))
        await stack.enter_async_context(notification_relay(settings, broker, redis, stop))
        await consumer.run(stop)
