"""Which of orderbot's own modules one customer message passes through, and how often
the path goes back and forth between them.

Why: a restructure of the packages should shorten the happy path of a Chat2Desk message
(webhook handler in the server -> broker -> the worker's step -> reply -> ack), not just
move files. This measures that path on the real processes, started as `python -m server`
and `python -m worker` through bench/_trace_role.py, so it needs no knowledge of the
package layout and gives comparable numbers before and after.

    .venv/bin/python -m bench.happy_path [--json FILE] [--with-resumes] [--keep]

It warms both processes up with a message of customer A, then records, in both, every
call into project code (files under server/ worker/ outbox_worker/ orderbot/ dialog/)
while a new customer B says "Привет", until the reply reached a fake Chat2Desk and the
worker acked. A visit is a maximal run of consecutive calls into one module; a module
with more than one visit was re-entered. Calls made by background tasks (queue depth
polling, tenant follower, lock renewal, the driver's own /metrics polls) are left out
and listed apart. Needs the local RabbitMQ, Redis and PostgreSQL; everything it creates
(queues, Redis keys, a database) is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiohttp
import asyncpg
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from bench.bodies import chat2desk_body
from bench.harness import free_port

ROOT = Path(__file__).resolve().parent.parent
TRACER = Path(__file__).resolve().parent / "_trace_role.py"
ROLES = ("server", "worker")
# Task names of the background loops (grep create_task); "ops-probe" is our /metrics polls.
BACKGROUND = (
    "queue-depths",
    "tenant-directory",
    "client-lock-renew",
    "broker-connect",
    "notification-relay",
    "ops-probe",
)
GREETING = "Привет"
# module, function, resumed, task, t_ns, the project modules below it on the stack
Event = tuple[str, str, bool, str, int, list[str]]


def say(message: str) -> None:
    print(f"[happy_path {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def new_namespace() -> str:
    """tests/support/queue_sweep.py's format (time, host, pid): a killed run's queues get swept."""
    host = zlib.crc32(socket.gethostname().encode()) & 0xFFFF
    tail = random.getrandbits(24)
    return f"t{int(time.time()):08x}{host:04x}{os.getpid() & 0xFFFFFF:06x}{tail:06x}"


async def until(check: Callable[[], Awaitable[bool]], what: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def all_exist(paths: list[Path]) -> bool:
    return all(path.exists() for path in paths)


class FakeChat2Desk:
    """POST /v1/messages answering 200 {"status": "success"}; records the bodies."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _send(self, request: web.Request) -> web.Response:
        self.received.append(await request.json())
        return web.json_response({"status": "success", "data": {"message_id": 1}})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/messages", self._send)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    def got(self, client_id: int) -> bool:
        return any(str(body.get("client_id")) == str(client_id) for body in self.received)


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Run:
    """One measurement: its namespace, processes, and everything to delete after."""

    def __init__(self, workdir: Path) -> None:
        self.ns = new_namespace()
        self.workdir = workdir
        self.amqp_url = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
        self.redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        server_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
        self.db_name = f"orderbot_happy_{self.ns}"
        self.admin_url = urlunsplit(urlsplit(server_url)._replace(path="/postgres"))
        self.db_url = urlunsplit(urlsplit(server_url)._replace(path=f"/{self.db_name}"))
        self.token = f"hp-webhook-{self.ns}"
        self.http_port = free_port()
        self.ops_ports = {role: free_port() for role in ROLES}
        self.fake = FakeChat2Desk()
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.session = aiohttp.ClientSession()

    def env(self, role: str) -> dict[str, str]:
        return {
            **os.environ,
            "AMQP_URL": self.amqp_url,
            "REDIS_URL": self.redis_url,
            "DATABASE_URL": self.db_url,
            "QUEUE_PREFIX": f"{self.ns}-",
            "REDIS_KEY_PREFIX": f"{self.ns}:",
            "CHAT2DESK_WEBHOOK_TOKEN": self.token,
            "CHAT2DESK_API_TOKEN": f"hp-api-{self.ns}",
            "CHAT2DESK_API_URL": self.fake.url,
            "ORDERBOT_MASTER_KEY": "",  # the settings' own tenant only, whatever .env says
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(self.http_port),
            "METRICS_PORT": str(self.ops_ports[role]),
            "LOG_LEVEL": "warning",
            "LOG_FORMAT": "json",
            "TRACE_OUT": str(self.trace(role)),
        }

    def trace(self, role: str) -> Path:
        return self.workdir / f"{role}.json"

    async def start(self) -> None:
        await self.fake.start()
        cli = Path(sys.executable).parent / "orderbot"
        migrate = await asyncio.create_subprocess_exec(
            str(cli) if cli.exists() else "orderbot", "migrate", env=self.env("server"), cwd=ROOT
        )
        if await migrate.wait() != 0:
            raise RuntimeError("orderbot migrate failed")
        for role in ROLES:
            log = (self.workdir / f"{role}.log").open("ab")
            self.procs[role] = await asyncio.create_subprocess_exec(
                sys.executable,
                str(TRACER),
                role,
                env=self.env(role),
                cwd=ROOT,
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_parent,
            )
            log.close()
        await until(lambda: self.ok(self.http_port, "/health/ready"), "server ready", 60)
        await until(lambda: self.ok(self.ops_ports["worker"], "/health/ready"), "worker ready", 60)

    async def ok(self, port: int, path: str) -> bool:
        for role, proc in self.procs.items():
            if proc.returncode is not None:
                raise RuntimeError(f"{role} exited with {proc.returncode}; see {self.workdir}")
        try:
            async with self.session.get(f"http://127.0.0.1:{port}{path}") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    async def applied(self) -> float:
        """orderbot_messages_processed_total{queue="messages",outcome="applied"} of the worker."""
        url = f"http://127.0.0.1:{self.ops_ports['worker']}/metrics"
        async with self.session.get(url) as response:
            text = await response.text()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "orderbot_messages_processed_total"
            and sample.labels == {"queue": "messages", "outcome": "applied"}
        )

    async def message(self, client_id: int, text: str, before: float | None = None) -> None:
        """Post a customer message and wait for its reply at the fake and the worker's ack."""
        before = await self.applied() if before is None else before
        body = chat2desk_body(f"{self.ns}-{client_id}", client_id, text)
        url = f"http://127.0.0.1:{self.http_port}/webhook/chat2desk/{self.token}"
        headers = {"Content-Type": "application/json"}
        async with self.session.post(url, data=body, headers=headers) as response:
            if response.status != 200:
                raise RuntimeError(f"webhook answered {response.status}: {await response.text()}")

        async def replied() -> bool:
            return self.fake.got(client_id)

        async def acked() -> bool:
            return await self.applied() > before

        await until(replied, f"the reply to customer {client_id}")
        await until(acked, f"the worker's ack of customer {client_id}'s message")

    async def record(self, client_id: int, text: str, settle: float) -> dict[str, list[Event]]:
        """Both processes' events from just before the webhook to `settle` s after the ack."""
        await asyncio.sleep(settle)  # the warm-up's deferred work (a 50 ms edge mark) done
        before = await self.applied()  # outside the window: fewer of our polls in it
        for role in ROLES:
            self.procs[role].send_signal(signal.SIGUSR1)

        async def recording() -> bool:
            return all_exist([Path(f"{self.trace(role)}.on") for role in ROLES])

        await until(recording, "the recorders to start", 10)
        await self.message(client_id, text, before)
        await asyncio.sleep(settle)  # and this message's own deferred work, always in
        for role in ROLES:
            self.procs[role].send_signal(signal.SIGUSR2)

        async def written() -> bool:
            return all_exist([self.trace(role) for role in ROLES])

        await until(written, "the recorders' files", 10)
        traces: dict[str, list[Event]] = {}
        for role in ROLES:
            events = json.loads(self.trace(role).read_text())["events"]
            # Task names may hold the queue names: the namespace out, runs compare.
            traces[role] = [
                (m, f, r, t.replace(self.ns, "NS"), at, list(c)) for m, f, r, t, at, c in events
            ]
        return traces

    async def close(self) -> None:
        for role, proc in self.procs.items():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)  # by pid: only our own children
                try:
                    await asyncio.wait_for(proc.wait(), 40)
                except TimeoutError:
                    say(f"{role} ignored SIGTERM; killing pid {proc.pid}")
                    proc.kill()
                    await proc.wait()
        await self.session.close()
        if self.fake.runner is not None:
            await self.fake.runner.cleanup()
        for cleanup in (self._delete_queues, self._delete_keys, self._drop_database):
            try:
                await cleanup()
            except Exception as exc:
                say(f"cleanup {cleanup.__name__} failed: {exc!r}")

    async def _delete_queues(self) -> None:
        prefix = f"{self.ns}-"
        names = {prefix + name for name in ("messages", "outbox", "dlq")}
        if shutil.which("rabbitmqctl"):
            listing = await asyncio.create_subprocess_exec(
                "rabbitmqctl", "-q", "--no-table-headers", "list_queues", "name",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            out, _ = await listing.communicate()
            names |= {q for q in out.decode().split() if q.startswith(prefix)}
        connection = await aio_pika.connect(self.amqp_url)
        async with connection:
            channel = await connection.channel()
            for name in sorted(names):
                try:
                    await channel.queue_delete(name)
                except aio_pika.exceptions.AMQPError:
                    channel = await connection.channel()

    async def _delete_keys(self) -> None:
        redis = Redis.from_url(self.redis_url)
        try:
            keys = [key async for key in redis.scan_iter(match=f"{self.ns}:*", count=1000)]
            if keys:
                await redis.delete(*keys)
        finally:
            await redis.aclose()

    async def _drop_database(self) -> None:
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        finally:
            await admin.close()


def visits(events: list[Event]) -> list[list[Any]]:
    """[module, calls] per maximal run of consecutive events in one module."""
    runs: list[list[Any]] = []
    for event in events:
        if runs and runs[-1][0] == event[0]:
            runs[-1][1] += 1
        else:
            runs.append([event[0], 1])
    return runs


def back_and_forth(events: list[Event]) -> dict[str, int]:
    """Calls into a module that is already on the call stack under another module:
    "M → X → M", counted by that chain. A call handed down as a callback (a lambda or
    a nested function M gave X) is marked so: it is M's own code run for M by X."""
    found: Counter[str] = Counter()
    for module, function, resumed, _, _, callers in events:
        if resumed or not callers or callers[-1] == module or module not in callers[:-1]:
            continue
        start = len(callers) - 1 - callers[::-1].index(module)
        chain = " → ".join([*callers[start:], module])
        callback = "<lambda>" in function or "<locals>" in function
        found[f"{chain}{' (callback)' if callback else ''}"] += 1
    return dict(found.most_common())


def summary(events: list[Event], runs: list[list[Any]]) -> dict[str, Any]:
    per_module = Counter(module for module, _ in runs)
    return {
        "back_and_forth": back_and_forth(events),
        "modules": sorted({e[0] for e in events}),
        "visits": len(runs),
        "calls": sum(1 for e in events if not e[2]),
        "resumptions": sum(1 for e in events if e[2]),
        "reentered": {m: n for m, n in sorted(per_module.items(), key=lambda i: -i[1]) if n > 1},
    }


def analyse(traces: dict[str, list[Event]], with_resumes: bool) -> dict[str, Any]:
    report: dict[str, Any] = {"roles": {}, "sequence": []}
    kept_all: list[Event] = []
    runs_all: list[list[Any]] = []
    for role, events in traces.items():
        kept = [e for e in events if e[3] not in BACKGROUND]
        runs = visits([e for e in kept if with_resumes or not e[2]])
        noise = Counter(f"{e[3]}: {e[0]}" for e in events if e[3] in BACKGROUND)
        report["roles"][role] = {
            **summary(kept, runs),
            "calls_per_module": dict(Counter(e[0] for e in kept if not e[2]).most_common()),
            "resumptions_per_module": dict(Counter(e[0] for e in kept if e[2]).most_common()),
            "tasks": dict(Counter(e[3] for e in events).most_common()),
            "excluded_background": dict(noise.most_common()),
        }
        report["sequence"] += [[role, module, calls] for module, calls in runs]
        kept_all += kept
        runs_all += runs
    report["together"] = summary(kept_all, runs_all)
    report["with_resumes"] = with_resumes
    return report


def show(report: dict[str, Any]) -> None:
    kind = "calls and coroutine resumptions" if report["with_resumes"] else "calls"
    print(f'Happy path of one new Chat2Desk customer saying "{GREETING}", visits by {kind}')
    rows = [*report["roles"].items(), ("together", report["together"])]
    for name, part in rows:
        print(
            f"  {name:9} {len(part['modules']):3} modules {part['visits']:4} visits "
            f"{part['calls']:5} calls (+{part['resumptions']} resumptions) "
            f"{len(part['reentered'])} modules re-entered, "
            f"{sum(part['back_and_forth'].values())} calls back into a module on the stack"
        )
    print("\nVisit sequence (process, module, consecutive calls):")
    for i, (role, module, calls) in enumerate(report["sequence"], 1):
        print(f"  {i:4} {role:7} {module:40} x{calls}")
    for name, part in rows:
        reentered = ", ".join(f"{m} {n}" for m, n in part["reentered"].items()) or "none"
        print(f"\nRe-entered modules ({name}: visits): {reentered}")
    for role, part in report["roles"].items():
        print(f"\nBack and forth ({role}): a module called again from a module it called")
        for chain, count in part["back_and_forth"].items():
            print(f"  {count:4} {chain}")
        if not part["back_and_forth"]:
            print("  none")
    for role, part in report["roles"].items():
        print(f"\nCalls per module ({role}; +resumptions):")
        resumed = part["resumptions_per_module"]
        for module in part["modules"]:
            calls = part["calls_per_module"].get(module, 0)
            print(f"  {module:40} {calls:5} +{resumed.get(module, 0)}")
        noise = ", ".join(f"{k} x{n}" for k, n in part["excluded_background"].items())
        print(f"  left out, background tasks: {noise or 'none'}")
        tasks = ", ".join(f"{k} {n}" for k, n in part["tasks"].items())
        print(f"  events by asyncio task (check for new background loops): {tasks}")


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="happy-path-"))
    run = Run(workdir)
    ok = False
    try:
        say(f"namespace {run.ns}, logs in {workdir}")
        await run.start()
        base = random.randrange(10**8, 10**9)
        await run.message(base, GREETING)  # warm-up: lazy imports, first-use caches
        traces = await run.record(base + 1, GREETING, args.settle)
        report = analyse(traces, args.with_resumes)
        report["namespace"] = run.ns
        ok = True
        return report
    finally:
        await run.close()
        if ok and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            say(f"kept {workdir}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the report to this file")
    parser.add_argument(
        "--with-resumes",
        action="store_true",
        help="count coroutine resumptions (after an await) as entries too, not only calls",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=0.25,
        help="seconds of quiet before the window and of recording after the ack (0.25)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs and raw traces")
    args = parser.parse_args()
    report = asyncio.run(measure(args))
    show(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
