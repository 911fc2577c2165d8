"""The commands a new user and an operator type: `orderbot run` and `orderbot migrate`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest

from orderbot.orders import migrate as migrate_module
from tests.support.credentials import WEBHOOK_TOKEN
from tests.support.customers import Customer, expected_replies
from tests.support.fake_provider import FakeChat2Desk
from tests.support.processes import free_port, orderbot_cli, wait_http_ok
from tests.support.services import Services


async def _start_run(
    config: dict[str, str], tmp_path: Path, *, stdout: bool = False, **env: str
) -> tuple[asyncio.subprocess.Process, str, Path]:
    """`orderbot run` on a free port, its stderr (and `stdout`: its stdout too) in run.log,
    once the server is ready and both consumers are up; (process, base URL, log)."""
    port = free_port()
    log_path = tmp_path / "run.log"
    with log_path.open("wb") as log_file:
        run = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "orderbot.cli.main",
            "run",
            env={**os.environ, **config, "HTTP_PORT": str(port), **env},
            cwd=tmp_path,
            stdout=log_file if stdout else asyncio.subprocess.DEVNULL,
            stderr=log_file,
        )
    base = f"http://127.0.0.1:{port}"
    await wait_http_ok(f"{base}/health/ready")
    async with asyncio.timeout(30):  # both roles consume (the worker once per partition)
        while not _consuming(log_path.read_text()) >= {"worker", "outbox_worker"}:
            await asyncio.sleep(0.02)
    return run, base, log_path


def _consuming(log: str) -> set[str]:
    """The roles that logged a consumer up."""
    return {
        str(orjson.loads(line).get("role"))
        for line in log.splitlines()
        if '"event":"consuming"' in line and line.startswith("{")
    }


async def test_run_starts_the_whole_system_and_ctrl_c_stops_it_cleanly(
    config: dict[str, str], fake: FakeChat2Desk, tmp_path: Path
) -> None:
    run, base, log_path = await _start_run(config, tmp_path)
    customer = Customer()
    async with aiohttp.ClientSession() as http:
        url = f"{base}/webhook/chat2desk/{WEBHOOK_TOKEN}"
        async with http.post(url, json=customer.says("Hello")) as response:
            assert response.status == 200
    await fake.wait_for(lambda: len(fake.texts_for(customer.client_id)) == 1)

    run.send_signal(signal.SIGINT)
    status = await asyncio.wait_for(run.wait(), 30)
    log = log_path.read_text()

    assert status == 0, log[-3000:]
    assert fake.texts_for(customer.client_id) == expected_replies(["Hello"])
    assert log.count('"event":"stopped"') == 3


async def test_every_line_run_prints_in_json_mode_is_one_whole_json_object(
    config: dict[str, str], fake: FakeChat2Desk, tmp_path: Path
) -> None:
    run, base, log_path = await _start_run(config, tmp_path, stdout=True, LOG_FORMAT="json")
    customers = [Customer() for _ in range(20)]
    async with aiohttp.ClientSession() as http:
        url = f"{base}/webhook/chat2desk/{WEBHOOK_TOKEN}"
        for customer in customers:
            async with http.post(url, json=customer.says("Hello")) as response:
                assert response.status == 200
    await fake.wait_for(lambda: all(fake.texts_for(c.client_id) for c in customers))
    run.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(run.wait(), 30) == 0

    lines = log_path.read_text().splitlines()
    broken = [line for line in lines if not _is_json_object(line)]
    assert len(lines) > 40
    assert broken == []


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


async def test_migrate_creates_the_database_and_is_idempotent(
    services: Services, tmp_path: Path
) -> None:
    name = f"orderbot_migrate_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "DATABASE_URL": services.database_url(name)}
    try:
        for _ in range(2):
            status, _, stderr = await orderbot_cli("migrate", env=env, cwd=tmp_path)
            assert status == 0, stderr
        conn = await asyncpg.connect(services.database_url(name))
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables")}
        await conn.close()
        assert {"orders", "order_events"} <= tables
    finally:
        admin = await asyncpg.connect(services.database_url("postgres"))
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_a_migrate_that_fails_leaves_no_empty_database_behind(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"orderbot_migrate_{uuid.uuid4().hex[:8]}"
    url = services.database_url(name)
    monkeypatch.setattr(migrate_module, "schema_sql", lambda: "CREATE TABLE broken (")

    with pytest.raises(asyncpg.PostgresSyntaxError):
        await migrate_module.migrate(url)

    admin = await asyncpg.connect(services.database_url("postgres"))
    try:
        left = await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name)
    finally:
        await admin.close()
    assert left == 0
