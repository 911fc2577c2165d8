"""What operators rely on: metrics that move by the right amounts, logs that follow a
message from webhook to reply by its correlation id, readiness that answers in time."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp.test_utils import TestClient, TestServer

from orderbot.amqp.topology import Topology
from orderbot.config.settings import Settings
from server.app import create_app
from server.keys import BROKER
from tests.support.credentials import API_TOKEN, WEBHOOK_TOKEN
from tests.support.customers import HAPPY_PATH_RU, Customer, converse
from tests.support.fake_provider import FakeChat2Desk
from tests.support.ops import scrape, value
from tests.support.processes import OrderbotProcess, free_port, wait_http_ok
from tests.support.tcp_proxy import running_proxy

Spawn = Callable[..., Any]


async def _system(spawn: Spawn) -> tuple[str, dict[str, OrderbotProcess], dict[str, int]]:
    ports = {"server": free_port(), "worker": free_port(), "outbox_worker": free_port()}
    processes = {
        "server": await spawn("server", HTTP_PORT=str(ports["server"])),
        "worker": await spawn("worker", METRICS_PORT=str(ports["worker"])),
        "outbox_worker": await spawn("outbox_worker", METRICS_PORT=str(ports["outbox_worker"])),
    }
    for port in ports.values():
        await wait_http_ok(f"http://127.0.0.1:{port}/health/ready")
    await processes["worker"].wait_log('"consuming"')
    await processes["outbox_worker"].wait_log('"consuming"')
    return f"http://127.0.0.1:{ports['server']}", processes, ports


async def test_metrics_of_each_process_move_by_the_right_amounts(
    spawn: Spawn, fake: FakeChat2Desk, settings: Settings
) -> None:
    base, _, ports = await _system(spawn)
    customer, late = Customer(), Customer()
    async with aiohttp.ClientSession() as http:
        url = f"{base}/webhook/chat2desk/{WEBHOOK_TOKEN}"

        async def post(body: dict[str, Any]) -> int:
            async with http.post(url, json=body) as response:
                return response.status

        await converse(post, fake, customer, HAPPY_PATH_RU)
        fake.fail_next(500, 500, 500)  # the worker's three tries fail; the outbox delivers
        await converse(post, fake, late, ["Hello"])
        async with http.post(f"{base}/webhook/chat2desk/wrong", json={}) as refused:
            assert refused.status == 403
        async with http.post(
            url, data=b"{oops", headers={"Content-Type": "application/json"}
        ) as bad:
            assert bad.status == 400

        server = await scrape(http, f"{base}/metrics")
        worker = await scrape(http, f"http://127.0.0.1:{ports['worker']}/metrics")
        outbox = await scrape(http, f"http://127.0.0.1:{ports['outbox_worker']}/metrics")

    c2d = {"provider": "chat2desk"}
    assert value(server, "orderbot_webhooks_received_total", **c2d) == 8
    assert value(server, "orderbot_webhooks_published_total", **c2d) == 6
    assert value(server, "orderbot_webhooks_rejected_total", **c2d, reason="bad_token") == 1
    assert value(server, "orderbot_webhooks_rejected_total", **c2d, reason="malformed") == 1
    assert value(server, "orderbot_webhook_seconds_count", **c2d) == 8

    assert value(worker, "orderbot_sends_total", **c2d, outcome="ok") == 5
    assert value(worker, "orderbot_sends_total", **c2d, outcome="transient") == 3
    assert value(worker, "orderbot_outbox_enqueued_total", reason="failed") == 1
    for partition in Topology.from_settings(settings).partitions:  # the only worker: all
        assert value(worker, "orderbot_partition_owned", partition=partition) == 1
        assert value(worker, "orderbot_consumer_prefetch", queue=partition) == 10
        assert value(worker, "orderbot_consumer_inflight", queue=partition) == 0
    assert (
        value(worker, "orderbot_messages_processed_total", queue="messages", outcome="applied") == 6
    )
    assert value(worker, "orderbot_orders_created_total") == 1
    assert value(worker, "orderbot_dialog_step_seconds_count") == 6
    assert value(worker, "orderbot_message_age_seconds_count") == 6

    assert value(outbox, "orderbot_sends_total", **c2d, outcome="ok") == 1
    assert value(outbox, "orderbot_messages_processed_total", queue="outbox", outcome="sent") == 1


async def test_logs_follow_one_message_from_webhook_to_reply_by_correlation_id(
    spawn: Spawn, fake: FakeChat2Desk
) -> None:
    base, processes, _ = await _system(spawn)
    customer = Customer()
    body = customer.says("Hello", message_id=f"{customer.client_id}-traced")
    fake.fail_next(500, 500, 500)
    url = f"{base}/webhook/chat2desk/{WEBHOOK_TOKEN}"
    async with aiohttp.ClientSession() as http, http.post(url, json=body) as response:
        assert response.status == 200
    await fake.wait_for(lambda: len(fake.texts_for(customer.client_id)) == 1)
    for process in processes.values():
        assert await process.stop() == 0

    def events(role: str) -> list[str]:
        lines = [
            json.loads(line) for line in processes[role].logs().splitlines() if line.startswith("{")
        ]
        for line in lines:
            assert {"timestamp", "level", "event", "role"} <= line.keys()
        return [line["event"] for line in lines if line.get("correlation_id") == body["message_id"]]

    assert "webhook_queued" in events("server")
    assert {"reply_to_outbox", "step_applied"} <= set(events("worker"))
    assert "reply_sent" in events("outbox_worker")
    everything = "".join(p.logs() for p in processes.values())
    assert API_TOKEN not in everything
    assert WEBHOOK_TOKEN not in everything


async def test_readiness_is_503_within_2s_while_redis_hangs_and_200_when_back(
    make_settings: Callable[..., Settings],
) -> None:
    base = make_settings()
    parts = urlsplit(base.redis_url)
    async with running_proxy(parts.port or 6379) as proxy:
        via = urlunsplit(parts._replace(netloc=f"127.0.0.1:{proxy.port}"))
        app = create_app(make_settings(redis_url=via))
        async with TestClient(TestServer(app)) as client:
            await app[BROKER].wait_connected()
            assert (await client.get("/health/ready")).status == 200
            proxy.outage("blackhole")
            started = time.monotonic()
            down = await client.get("/health/ready")
            elapsed = time.monotonic() - started
            down_checks = (await down.json())["checks"]
            proxy.restore()
            async with asyncio.timeout(10):
                while (await client.get("/health/ready")).status != 200:
                    await asyncio.sleep(0.05)

    assert down.status == 503
    assert down_checks["redis"] == "timeout"
    assert elapsed < 2
