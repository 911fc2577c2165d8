"""The pm2 path for real: pm2 from the npm registry runs deploy/pm2/ecosystem.config.js,
webhooks are answered, the workers scale, `pm2 stop all` drains every process to exit
0, and every line pm2 wrote to its log files is one whole JSON object.

Needs node and npm (skipped without them). pm2 is installed once into .venv/pm2
(`make clean` removes it); its daemon runs with a PM2_HOME of the test's own and is
stopped with `pm2 kill` of that home only, so no other pm2 on the machine is touched.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.credentials import CONSOLE_SECRET, WEBCHAT_SECRET, WEBHOOK_TOKEN
from tests.support.customers import Customer
from tests.support.fake_provider import FakeChat2Desk
from tests.support.processes import free_port, wait_http_ok

REPO = Path(__file__).resolve().parents[2]
PM2_FILE = REPO / "deploy" / "pm2" / "ecosystem.config.js"
PM2_DIR = REPO / ".venv" / "pm2"
PM2_VERSION = "7.0.4"


@pytest.fixture(scope="module")
def pm2_bin() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed to run pm2")
    binary = PM2_DIR / "node_modules" / ".bin" / "pm2"
    if not binary.exists():
        PM2_DIR.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--silent", f"pm2@{PM2_VERSION}"],
            cwd=PM2_DIR,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"pm2 could not be installed from npm: {done.stderr[-500:]}")
    return binary


class Pm2:
    def __init__(self, binary: Path, home: Path, env: dict[str, str]) -> None:
        self.binary = binary
        self.env = {**os.environ, **env, "PM2_HOME": str(home)}

    async def __call__(self, *args: str, timeout: float = 120) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            str(self.binary),
            *args,
            cwd=REPO,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with asyncio.timeout(timeout):
                output, _ = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        assert process.returncode is not None
        return process.returncode, output.decode(errors="replace")

    async def apps(self) -> list[dict[str, Any]]:
        status, output = await self("jlist")
        assert status == 0, output
        start = output.index("[")  # after any notice pm2 prints first
        apps: list[dict[str, Any]] = json.loads(output[start:])
        return apps


@pytest.fixture
def pm2_home() -> Iterator[Path]:
    # A unix socket's path is short (108 bytes): not under pytest's long tmp_path.
    home = Path(f"/tmp/orderbot-pm2-{os.getpid()}-{free_port()}")
    home.mkdir()
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
async def pm2(
    pm2_bin: Path, pm2_home: Path, config: dict[str, str], tmp_path: Path
) -> AsyncIterator[tuple[Pm2, Path, int]]:
    port = free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    env = {
        **config,
        "ORDERBOT_BIN": str(REPO / ".venv" / "bin" / "orderbot"),
        "PM2_LOG_DIR": str(logs),
        "HTTP_PORT": str(port),
        # The ecosystem file's per-role ports, moved off the host's real ones.
        "WORKER_METRICS_PORT": str(free_port()),
        "OUTBOX_METRICS_PORT": str(free_port()),
        # The checkout's .env (from .env.example) holds example secrets, which a process
        # refuses outside ORDERBOT_DEV: a deployment sets its own, as here.
        "WEBCHAT_SECRET": WEBCHAT_SECRET,
        "CONSOLE_SESSION_SECRET": CONSOLE_SECRET,
    }
    # A port of 0 for any older single METRICS_PORT setting (every process its own).
    env["METRICS_PORT"] = "0"
    runner = Pm2(pm2_bin, pm2_home, env)
    try:
        yield runner, logs, port
    finally:
        await runner("kill", timeout=60)  # this PM2_HOME's daemon and its apps only


async def test_pm2_runs_scales_and_stops_the_apps_cleanly(
    pm2: tuple[Pm2, Path, int], fake: FakeChat2Desk
) -> None:
    run, logs, port = pm2
    status, output = await run("start", str(PM2_FILE))
    assert status == 0, output
    await wait_http_ok(f"http://127.0.0.1:{port}/health/ready", timeout=60)

    customers = [Customer() for _ in range(5)]
    url = f"http://127.0.0.1:{port}/webhook/chat2desk/{WEBHOOK_TOKEN}"
    async with aiohttp.ClientSession() as http:
        for customer in customers:
            async with http.post(url, json=customer.says("Привет")) as response:
                assert response.status == 200, await response.text()
        await fake.wait_for(lambda: all(fake.texts_for(c.client_id) for c in customers), timeout=60)

        status, output = await run("scale", "orderbot-worker", "3")
        assert status == 0, output

        async def three_workers_online() -> None:
            while True:
                apps = await run.apps()
                workers = [a for a in apps if a["name"] == "orderbot-worker"]
                if len(workers) == 3 and all(a["pm2_env"]["status"] == "online" for a in workers):
                    return
                await asyncio.sleep(0.5)

        await asyncio.wait_for(three_workers_online(), 60)
        more = [Customer() for _ in range(5)]
        for customer in more:
            async with http.post(url, json=customer.says("Привет")) as response:
                assert response.status == 200
        await fake.wait_for(lambda: all(fake.texts_for(c.client_id) for c in more), timeout=60)

    status, output = await run("stop", "all")
    assert status == 0, output
    apps = await run.apps()
    assert len(apps) == 5
    for app in apps:
        assert app["pm2_env"]["status"] == "stopped", app["name"]
        # Drained and exited by themselves (0), not killed after kill_timeout.
        assert app["pm2_env"].get("exit_code") == 0, (app["name"], app["pm2_env"].get("exit_code"))
        assert app["pm2_env"].get("restart_time", 0) == 0, app["name"]

    files = sorted(logs.iterdir())
    # One file per instance (merge_logs: false) and stream.
    assert len([f for f in files if "-out-" in f.name]) == 5, [f.name for f in files]
    lines = [line for file in files for line in file.read_text().splitlines()]
    assert lines, "no log lines at all"
    for line in lines:
        assert line.strip(), "an empty line"
        record = json.loads(line)  # whole JSON objects, no date prefix
        assert isinstance(record, dict)
        assert {"event", "level", "timestamp"} <= record.keys()
