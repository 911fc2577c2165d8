"""Time to first answer: what a newcomer waits between typing `make run` in a fresh clone
and the bot's first reply to README's example webhook.

    .venv/bin/python -m bench.first_answer [--source DIR] [--runs 2]

Clones DIR (default: this repository) into a temporary directory and runs `make run`
there, as README says: the venv is created and orderbot installed, `.env` copied from
`.env.example`, the database migrated, the three processes started. Once `/health`
answers, README's example webhook is posted, and the clock stops at the first
`step_applied` line with `replies_sent` above 0 (or a `reply_to_outbox` line) of the
command's output. The second run is the same `make run` again in the same clone: the
venv and `.env` are there already.

On a shared machine a few settings must differ from `.env`, given in the environment: a
free HTTP_PORT and ops ports, a queue and key prefix and a database of the run's own, and
CHAT2DESK_API_URL pointing at a fake send API in this process (the example token of
`.env.example` reaches no real Chat2Desk). The run is stopped with Ctrl-C (SIGINT to the
process group it started); then its database, queues, exchanges and Redis keys are
deleted, and the clone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import aiohttp
import asyncpg
from aiohttp import web
from redis.asyncio import Redis

from orderbot.config.settings import Settings

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = Settings.model_fields
AMQP_URL = os.environ.get("AMQP_URL", DEFAULTS["amqp_url"].default)
REDIS_URL = os.environ.get("REDIS_URL", DEFAULTS["redis_url"].default)
POSTGRES = "postgresql://postgres@localhost:5432"
ANSWERED = re.compile(rb"\bstep_applied\b.*\breplies_sent\W+[1-9]|\breply_to_outbox\b")
START_TIMEOUT = 900.0  # seconds: the install is part of what is measured


@dataclass
class Run:
    label: str
    prefix: str
    health_s: float | None = None
    answer_s: float | None = None
    webhook: str = ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def readme_example(readme: Path) -> tuple[str, bytes]:
    """The webhook path and JSON body of README's quick-start curl command."""
    text = readme.read_text(encoding="utf-8")
    path = re.search(r"curl -s localhost:\d+(/webhook/\S+)", text)
    body = re.search(r"-d '(\{.*?\})'", text)
    if path is None or body is None:
        raise SystemExit("README's quick start has no curl example to post")
    json.loads(body.group(1))
    return path.group(1), body.group(1).encode()


@contextlib.asynccontextmanager
async def fake_send_api() -> AsyncIterator[str]:
    async def send(_request: web.Request) -> web.Response:
        return web.json_response({"status": "success", "data": {"message_id": 1}})

    app = web.Application()
    app.router.add_post("/v1/messages", send)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def one_run(clone: Path, run: Run, api_url: str, path: str, body: bytes) -> None:
    names = {name.upper() for name in DEFAULTS}
    env = {k: v for k, v in os.environ.items() if k not in names and k != "CI"}
    port = free_port()
    env |= {
        "HTTP_PORT": str(port),
        "WORKER_METRICS_PORT": str(free_port()),
        "OUTBOX_METRICS_PORT": str(free_port()),
        "QUEUE_PREFIX": f"{run.prefix}-",
        "REDIS_KEY_PREFIX": f"{run.prefix}:",
        "DATABASE_URL": f"{POSTGRES}/orderbot_{run.prefix}",
        "CHAT2DESK_API_URL": api_url,
        "CHAT2DESK_API_TOKEN": "first-answer-token",
    }
    log_path = clone.parent / f"{run.prefix}.log"
    with log_path.open("wb") as log:
        started = time.monotonic()
        make = await asyncio.create_subprocess_exec(
            "make",
            "run",
            cwd=clone,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
    try:
        async with aiohttp.ClientSession() as http:
            await _until_health(http, f"http://127.0.0.1:{port}/health", make, started)
            run.health_s = time.monotonic() - started
            async with http.post(
                f"http://localhost:{port}{path}",
                data=body,
                headers={"Content-Type": "application/json"},
            ) as response:
                run.webhook = f"{response.status} {await response.text()}"
        while not ANSWERED.search(log_path.read_bytes()):
            if time.monotonic() - started > START_TIMEOUT or make.returncode is not None:
                raise SystemExit(f"no answer in the log of {run.label}: {log_path}")
            await asyncio.sleep(0.01)
        run.answer_s = time.monotonic() - started
    finally:
        await _stop(make)
        if run.answer_s is None:
            print(log_path.read_text(errors="replace")[-4000:])


async def _until_health(
    http: aiohttp.ClientSession, url: str, make: asyncio.subprocess.Process, started: float
) -> None:
    while time.monotonic() - started < START_TIMEOUT:
        if make.returncode is not None:
            raise SystemExit(f"`make run` exited with {make.returncode} before /health answered")
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(url) as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.01)
    raise SystemExit("/health did not answer in time")


async def _stop(make: asyncio.subprocess.Process) -> None:
    """Ctrl-C, as a terminal sends it: to the process group of `make run`."""
    if make.returncode is None:
        os.killpg(make.pid, signal.SIGINT)
    try:
        await asyncio.wait_for(make.wait(), 60)
    except TimeoutError:
        os.killpg(make.pid, signal.SIGKILL)
        await make.wait()


async def clean(prefix: str, queues: list[str], exchanges: list[str]) -> None:
    """Everything a run made on the shared services, found by its prefix."""
    admin = await asyncpg.connect(f"{POSTGRES}/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "orderbot_{prefix}" WITH (FORCE)')
    finally:
        await admin.close()
    redis = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for name in queues:
            if name.startswith(f"{prefix}-"):
                await channel.queue_delete(name)
        for name in exchanges:
            if name.startswith(f"{prefix}-"):
                await channel.exchange_delete(name)


def broker_names(kind: str) -> list[str]:
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "--no-table-headers", f"list_{kind}", "name"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return listed.stdout.split()


async def measure(clone: Path, runs: list[Run]) -> None:
    path, body = readme_example(clone / "README.md")
    async with fake_send_api() as api_url:
        for run in runs:
            await one_run(clone, run, api_url, path, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=REPO, help="the repository to clone")
    parser.add_argument("--runs", type=int, default=2, help="1: the fresh clone only")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="orderbot-first-answer-"))
    clone = work / "orderbot"
    labels = ("fresh clone", "second run, same clone")
    runs = [Run(label, f"fa{uuid.uuid4().hex[:10]}") for label in labels[: args.runs]]
    try:
        subprocess.run(["git", "clone", "--quiet", str(args.source), str(clone)], check=True)
        commit = subprocess.run(
            ["git", "-C", str(clone), "log", "-1", "--format=%h %cI"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        asyncio.run(measure(clone, runs))
    finally:
        queues, exchanges = broker_names("queues"), broker_names("exchanges")
        for run in runs:
            asyncio.run(clean(run.prefix, queues, exchanges))
        shutil.rmtree(work)
    print(f"`make run` of {commit}: time to first answer (webhook: {runs[0].webhook})")
    for run in runs:
        print(f"  {run.label:24} /health {run.health_s:6.1f} s   first reply {run.answer_s:6.1f} s")


if __name__ == "__main__":
    main()
