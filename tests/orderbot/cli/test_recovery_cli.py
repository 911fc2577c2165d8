"""`orderbot reconcile` and `orderbot chat2desk webhooks`, run as an operator would."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

from redis.asyncio import Redis

from orderbot.config.settings import Settings
from tests.support.credentials import PUBLIC_BASE_URL, WEBHOOK_TOKEN
from tests.support.customers import Customer, expected_replies
from tests.support.fake_provider import FakeChat2Desk
from tests.support.processes import orderbot_cli

OUR_URL = f"{PUBLIC_BASE_URL}/webhook/chat2desk/{WEBHOOK_TOKEN}"
MINUTE = timedelta(minutes=1)  # older than RECONCILE_GRACE


async def test_webhooks_json_reports_a_disabled_webhook_with_its_errors_and_exits_1(
    config: dict[str, str], fake: FakeChat2Desk, tmp_path: Path
) -> None:
    error = {"text": "connect timeout", "created_at": "2026-12-01T20:00:00 UTC"}
    fake.add_webhook(OUR_URL, status="disable", errors=[error])

    status, stdout, stderr = await orderbot_cli(
        "chat2desk", "webhooks", "--json", env=config, cwd=tmp_path
    )

    [row] = [json.loads(line) for line in stdout.splitlines()]
    assert status == 1, stderr
    assert (row["status"], row["errors"], row["tenant"]) == ("disable", [error], "default")
    assert WEBHOOK_TOKEN not in stdout


async def test_webhooks_enable_puts_the_webhook_back_with_status_enable(
    config: dict[str, str], fake: FakeChat2Desk, tmp_path: Path
) -> None:
    hook = fake.add_webhook(OUR_URL, status="disable")

    status, stdout, stderr = await orderbot_cli(
        "chat2desk", "webhooks", "enable", str(hook["id"]), env=config, cwd=tmp_path
    )

    assert status == 0, stderr
    [put] = [call for call in fake.webhook_calls if call[0] == "PUT"]
    assert put[1] == f"/v1/webhooks/{hook['id']}"
    assert put[2] == {"name": "orderbot", "url": OUR_URL, "events": ["inbox"], "status": "enable"}
    assert fake.webhooks[0]["status"] == "enable"
    assert stdout.strip() == f"enabled webhook {hook['id']}"


async def test_webhooks_register_creates_ours_for_messages_and_dialog_ends(
    config: dict[str, str], fake: FakeChat2Desk, tmp_path: Path
) -> None:
    status, stdout, stderr = await orderbot_cli(
        "chat2desk", "webhooks", "register", OUR_URL, env=config, cwd=tmp_path
    )

    assert status == 0, stderr
    [created] = fake.webhooks
    assert (created["url"], created["events"]) == (OUR_URL, ["inbox", "outbox", "close_dialog"])
    assert stdout.strip() == f"registered webhook {created['id']}"


async def test_reconcile_dry_run_prints_a_missed_message_and_publishes_nothing(
    config: dict[str, str], settings: Settings, fake: FakeChat2Desk, redis: Redis, tmp_path: Path
) -> None:
    customer = Customer()
    listed = fake.customer_writes_chat2desk(customer.client_id, "Hello", ago=MINUTE)

    status, stdout, stderr = await orderbot_cli(
        "reconcile", "--dry-run", "--since", "2h", "--json", env=config, cwd=tmp_path
    )

    assert status == 0, stderr
    [row] = [json.loads(line) for line in stdout.splitlines()]
    assert (row["message_id"], row["client_id"], row["outcome"]) == (
        str(listed["id"]),
        customer.client_id,
        "dry_run",
    )
    assert await redis.keys(f"{settings.redis_key_prefix}reconcile:*") == []


async def test_reconcile_publishes_a_missed_message_and_the_worker_answers_it(
    config: dict[str, str],
    fake: FakeChat2Desk,
    worker: asyncio.Task[None],
    tmp_path: Path,
) -> None:
    customer = Customer()
    fake.customer_writes_chat2desk(customer.client_id, "Hello", ago=MINUTE)

    status, stdout, stderr = await orderbot_cli(
        "reconcile", "--tenant", "default", env=config, cwd=tmp_path
    )
    await fake.wait_for(lambda: bool(fake.texts_for(customer.client_id)))

    assert status == 0, stderr
    assert stdout.splitlines()[-1].startswith("found 1 message(s): 1 published")
    assert fake.texts_for(customer.client_id) == expected_replies(["Hello"])
