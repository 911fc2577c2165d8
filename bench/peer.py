"""`make bench-peer`: orderbot next to the system it replaces, on the same machine, with
the same load generator, one after the other.

The peer is the seed (AlexanderMokeichuk/chat2desk-order-bot, TypeScript on Bun, MIT).
Its code is not part of this repository: PEER_SEED_DIR names a local clone, which this
builds with Bun (`bun install --frozen-lockfile`, `bun run build`; PEER_BUN names the
binary, else `bun` on PATH) and runs from its sources. It gets a namespace of its own on
the shared services: a RabbitMQ vhost (its queue names are fixed: `messages`, `outbox`,
`dlq`), a Redis db number (PEER_REDIS_DB, default 14, which must be empty; the seed reads
no db setting, so `peer_redis_db.js` is preloaded to set ioredis's default) and a
PostgreSQL database with its own `scripts/init.sql`; all three are deleted afterwards.
Its replies go to the same fake Chat2Desk as ours (bench/driver.py).

Each round measures both systems in turn (the seed first), `--rounds` times (2):

- ingest: the server alone, closed loop at 32 connections (bench/loadgen.py);
- pipeline: the server and one worker, `WORKER_CONCURRENCY=10`, logs at warning level,
  64 customers walking the whole order dialog in a closed loop (bench/driver.py).

CPU is read from /proc for our processes, the seed's and the services' (all of
RabbitMQ's, Redis's and PostgreSQL's processes, which other work on a shared machine
uses too); per webhook and per step it does not count time spent waiting for a core,
which makes it the figure to compare when the machine is busy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
from redis.asyncio import Redis
from yarl import URL

from bench.bodies import SEED_WEBHOOK_PATH, webhook_path
from bench.harness import (
    API_TOKEN,
    BENCH,
    RESULTS,
    WEBHOOK_TOKEN,
    Meter,
    Proc,
    Stack,
    free_port,
    run_json,
    say,
    wait_http,
)
from bench.report import machine, save_json
from orderbot.config.settings import Settings

CONNECTIONS = 32
CUSTOMERS = 64
SERVICES = ("rabbitmq", "redis", "postgresql")


def bun_binary() -> str:
    found = os.environ.get("PEER_BUN") or shutil.which("bun")
    if not found:
        raise SystemExit("bench-peer: no bun (set PEER_BUN, or put bun on PATH)")
    return found


def seed_dir() -> Path:
    value = os.environ.get("PEER_SEED_DIR")
    if not value or not (Path(value) / "src" / "server.ts").exists():
        raise SystemExit("bench-peer: PEER_SEED_DIR must name a clone of the seed")
    return Path(value).resolve()


async def _run(*command: str, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> str:
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{out.decode(errors='replace')}")
    return out.decode(errors="replace")


async def build_seed(source: Path, bun: str) -> str:
    """Install the seed's locked dependencies and build it; its Bun version."""
    path = {"PATH": f"{Path(bun).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    version = (await _run(bun, "--version")).strip()
    say(f"building the seed with bun {version}")
    await _run(bun, "install", "--frozen-lockfile", cwd=source, env=path)
    await _run(bun, "run", "build", cwd=source, env=path)
    return version


class Seed:
    """The seed's server and worker in a vhost, Redis db and database of their own."""

    def __init__(self, source: Path, bun: str, log_dir: Path, api_port: int) -> None:
        self.source = source
        self.bun = bun
        self.log_dir = log_dir
        self.name = f"peer{uuid.uuid4().hex[:8]}"
        base = Settings(_env_file=None)
        self.admin_url = base.database_url.rsplit("/", 1)[0] + "/postgres"
        self.database_url = base.database_url.rsplit("/", 1)[0] + f"/{self.name}"
        self.redis_db = int(os.environ.get("PEER_REDIS_DB", "14"))
        redis_url = URL(base.redis_url)
        self.redis_url = str(redis_url.with_path(f"/{self.redis_db}"))
        self.amqp_url = base.amqp_url.rstrip("/") + f"/{self.name}"
        self.http_port = free_port()
        self.server: Proc | None = None
        self.worker: Proc | None = None
        self.env = {
            "NODE_ENV": "production",
            "PORT": str(self.http_port),
            "RABBITMQ_URL": self.amqp_url,
            "REDIS_HOST": redis_url.host or "127.0.0.1",
            "REDIS_PORT": str(redis_url.port or 6379),
            "PEER_REDIS_DB": str(self.redis_db),
            "PEER_SEED_DIR": str(source),
            "DATABASE_HOST": "127.0.0.1",
            "DATABASE_PORT": "5432",
            "DATABASE_NAME": self.name,
            "DATABASE_USER": "postgres",
            "DATABASE_PASSWORD": "",
            "CHAT2DESK_API_URL": f"http://127.0.0.1:{api_port}/v1",
            "CHAT2DESK_API_TOKEN": API_TOKEN,
            "WORKER_CONCURRENCY": "10",
            "LOG_LEVEL": "warn",
        }

    async def __aenter__(self) -> Seed:
        redis = Redis.from_url(self.redis_url)
        try:
            if await redis.dbsize():
                raise SystemExit(f"bench-peer: Redis db {self.redis_db} is not empty")
        finally:
            await redis.aclose()
        await _run("rabbitmqctl", "-q", "add_vhost", self.name)
        await _run(
            "rabbitmqctl", "-q", "set_permissions", "-p", self.name, "guest", ".*", ".*", ".*"
        )
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await admin.close()
        conn = await asyncpg.connect(self.database_url)
        try:
            await conn.execute((self.source / "scripts" / "init.sql").read_text())
        finally:
            await conn.close()
        return self

    async def __aexit__(self, *_: object) -> None:
        for proc in (self.worker, self.server):
            if proc is not None:
                await proc.stop()
        with contextlib.suppress(RuntimeError):
            await _run("rabbitmqctl", "-q", "delete_vhost", self.name)
        redis = Redis.from_url(self.redis_url)
        try:
            keys = [key async for key in redis.scan_iter(match="dialog:*", count=5000)]
            if keys:
                await redis.unlink(*keys)
        finally:
            await redis.aclose()
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await admin.close()

    async def _spawn(self, role: str) -> Proc:
        log_path = self.log_dir / f"seed-{role}.log"
        with log_path.open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                self.bun,
                "--preload",
                str(BENCH / "peer_redis_db.js"),
                str(self.source / "src" / f"{role}.ts"),
                env={**os.environ, **self.env},
                cwd=self.log_dir,  # its logs/ go here; no .env of a developer is read
                stdout=log,
                stderr=log,
                stdin=asyncio.subprocess.DEVNULL,
            )
        return Proc(f"seed-{role}", process, log_path)

    async def start_server(self) -> Proc:
        self.server = await self._spawn("server")
        await wait_http(self.http_port)
        return self.server

    async def start_worker(self) -> Proc:
        self.worker = await self._spawn("worker")
        async with asyncio.timeout(30):
            while await self._consumers() < 1:  # noqa: ASYNC110 (polling the broker)
                await asyncio.sleep(0.1)
        return self.worker

    async def _consumers(self) -> int:
        with contextlib.suppress(aio_pika.exceptions.AMQPError, OSError):
            async with _channel(self.amqp_url) as channel:
                queue = await channel.declare_queue("messages", passive=True)
                return int(queue.declaration_result.consumer_count or 0)
        return 0

    async def purge(self) -> None:
        """Empty `messages` of what ingest left, until it stays empty: the seed publishes
        without confirms, so the broker is still taking in its backlog after the load
        generator stopped, and a worker started on it would answer strangers."""
        async with _channel(self.amqp_url) as channel, asyncio.timeout(120):
            quiet = 0
            while quiet < 3:
                queue = await channel.declare_queue("messages", passive=True)
                left = int(queue.declaration_result.message_count or 0)
                if left:
                    await queue.purge()
                quiet = 0 if left else quiet + 1
                await asyncio.sleep(0.5)

    async def orders(self) -> int:
        conn = await asyncpg.connect(self.database_url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM orders"))
        finally:
            await conn.close()


@contextlib.asynccontextmanager
async def _channel(url: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(url)
    try:
        yield await connection.channel()
    finally:
        await connection.close()


async def ingest(
    name: str, port: int, path: str, proc: Proc, log_dir: Path, seconds: float
) -> dict[str, Any]:
    say(f"ingest {name}, closed loop at {CONNECTIONS} connections")
    args = ["-m", "bench.loadgen", "--port", str(port), "--path", path, "--mode", "closed"]
    args += ["--concurrency", str(CONNECTIONS), "--duration", str(seconds), "--warmup", "1"]
    args += ["--run-id", f"{name}-{uuid.uuid4().hex[:8]}"]
    meter = Meter([proc])
    result = await run_json("loadgen", args, log_dir, within=seconds + 40)
    result.update(meter.read())
    cores = float(result["cores_used"].get(proc.name, 0.0))
    result["server_cpu_us_per_webhook"] = (
        round(cores / result["rps"] * 1e6) if result["rps"] else None
    )
    return result


async def pipeline(
    name: str,
    *,
    port: int,
    api_port: int,
    path: str,
    dialog: str,
    procs: list[Proc],
    log_dir: Path,
    seconds: float,
    first_client_id: int,
) -> dict[str, Any]:
    say(f"pipeline {name}, {CUSTOMERS} customers, closed loop")
    args = ["-m", "bench.driver", "--server-port", str(port), "--api-port", str(api_port)]
    args += ["--path", path, "--dialog", dialog, "--mode", "closed"]
    args += ["--customers", str(CUSTOMERS), "--duration", str(seconds), "--warmup", "1"]
    args += [
        "--run-id",
        f"{name}-{uuid.uuid4().hex[:6]}",
        "--first-client-id",
        str(first_client_id),
    ]
    meter = Meter(procs)
    out = await run_json("driver", args, log_dir, within=seconds + 60)
    result: dict[str, Any] = out["result"]
    result.update(meter.read())
    cores: dict[str, float] = result["cores_used"]
    rate = float(result["steps_per_s"])
    server, worker = procs
    if rate > 0:
        result["cpu_us_per_step"] = {
            "server": round(cores.get(server.name, 0.0) / rate * 1e6),
            "worker": round(cores.get(worker.name, 0.0) / rate * 1e6),
            "all": round(
                sum(cores.get(n, 0.0) for n in (server.name, worker.name, *SERVICES)) / rate * 1e6
            ),
            **{service: round(cores.get(service, 0.0) / rate * 1e6) for service in SERVICES},
        }
    return result


async def measure_seed(
    source: Path,
    bun: str,
    log_dir: Path,
    *,
    ingest_seconds: float,
    pipeline_seconds: float,
    round_no: int,
) -> dict[str, Any]:
    api_port = free_port()
    async with Seed(source, bun, log_dir, api_port) as seed:
        server = await seed.start_server()
        taken = await ingest(
            "seed", seed.http_port, SEED_WEBHOOK_PATH, server, log_dir, ingest_seconds
        )
        await seed.purge()
        worker = await seed.start_worker()
        run = await pipeline(
            "seed",
            port=seed.http_port,
            api_port=api_port,
            path=SEED_WEBHOOK_PATH,
            dialog="seed",
            procs=[server, worker],
            log_dir=log_dir,
            seconds=pipeline_seconds,
            first_client_id=10**9 + round_no * 10**6,
        )
        run["orders_in_database"] = await seed.orders()
    return {"ingest": taken, "pipeline": run}


async def measure_orderbot(
    log_dir: Path, args: argparse.Namespace, round_no: int
) -> dict[str, Any]:
    api_port = free_port()
    async with Stack(log_dir, api_port) as stack:
        assert stack.server is not None
        path = webhook_path(WEBHOOK_TOKEN)
        taken = await ingest(
            "orderbot", stack.http_port, path, stack.server, log_dir, args.ingest_seconds
        )
        await stack.purge_messages()
        await stack.start_workers(1)
        run = await pipeline(
            "orderbot",
            port=stack.http_port,
            api_port=api_port,
            path=path,
            dialog="orderbot",
            procs=[stack.server, stack.workers[0]],
            log_dir=log_dir,
            seconds=args.pipeline_seconds,
            first_client_id=2 * 10**9 + round_no * 10**6,
        )
        await stack.stop_workers()
        run["orders_in_database"] = await stack.count_orders()
    return {"ingest": taken, "pipeline": run}


async def seed_beside(
    log_dir: Path, *, ingest_seconds: float, pipeline_seconds: float
) -> dict[str, Any] | None:
    """The seed measured once more, for `make bench`'s tables, when PEER_SEED_DIR names
    a clone; None otherwise (the peer is optional there, unlike in `make bench-peer`)."""
    if not os.environ.get("PEER_SEED_DIR"):
        return None
    source, bun = seed_dir(), bun_binary()
    version = await build_seed(source, bun)
    run = await measure_seed(
        source,
        bun,
        log_dir,
        ingest_seconds=ingest_seconds,
        pipeline_seconds=pipeline_seconds,
        round_no=0,
    )
    return {"bun": version, **run}


def _span(values: list[float], digits: int = 0) -> str:
    low, high = min(values), max(values)
    fmt = f"{{:,.{digits}f}}"
    return (
        fmt.format(low)
        if fmt.format(low) == fmt.format(high)
        else f"{fmt.format(low)}–{fmt.format(high)}"
    )


def _ratio(ours: list[float], theirs: list[float]) -> str:
    mean_ours, mean_theirs = sum(ours) / len(ours), sum(theirs) / len(theirs)
    return f"{mean_ours / mean_theirs:.2f}" if mean_theirs else "—"


def _correct(run: dict[str, Any]) -> bool:
    return (
        run["lost"] == 0
        and run["unexpected_replies"] == 0
        and not run["rejected"]
        and run["orders_in_database"] == run["orders_total"]
    )


def table(rounds: list[dict[str, Any]], bun_version: str) -> str:
    def pick(system: str, *keys: str) -> list[float]:
        values = []
        for r in rounds:
            value: Any = r[system]
            for key in keys:
                value = value[key]
            values.append(float(value))
        return values

    s_rps, o_rps = pick("seed", "ingest", "rps"), pick("orderbot", "ingest", "rps")
    s_cpu, o_cpu = (pick(x, "ingest", "server_cpu_us_per_webhook") for x in ("seed", "orderbot"))
    s_steps, o_steps = (
        pick("seed", "pipeline", "steps_per_s"),
        pick("orderbot", "pipeline", "steps_per_s"),
    )
    step = {
        x: {
            k: pick(x, "pipeline", "cpu_us_per_step", k)
            for k in ("server", "worker", "all", *SERVICES)
        }
        for x in ("seed", "orderbot")
    }
    lat = {
        x: (pick(x, "pipeline", "webhook_ms", "p50"), pick(x, "pipeline", "webhook_ms", "p99"))
        for x in ("seed", "orderbot")
    }
    ok = {x: all(_correct(r[x]["pipeline"]) for r in rounds) for x in ("seed", "orderbot")}

    def per_step(x: str) -> str:
        return f"{_span(step[x]['server'])} / {_span(step[x]['worker'])} µs"

    def services(x: str) -> str:
        return " / ".join(_span(step[x][k]) for k in SERVICES) + " µs"

    def latency(x: str) -> str:
        return f"{_span(lat[x][0], 1)} / {_span(lat[x][1], 1)} ms"

    rows = [
        ("measure", f"the seed (Bun {bun_version})", "orderbot", "ratio (orderbot ÷ seed)"),
        ("---", "---", "---", "---"),
        (
            f"ingest, {CONNECTIONS} connections, req/s",
            _span(s_rps),
            _span(o_rps),
            _ratio(o_rps, s_rps),
        ),
        (
            "server CPU per webhook",
            f"{_span(s_cpu)} µs",
            f"{_span(o_cpu)} µs",
            f"{_ratio(o_cpu, s_cpu)}×",
        ),
        ("pipeline steps/s", _span(s_steps), _span(o_steps), _ratio(o_steps, s_steps)),
        (
            "CPU per step: server / worker",
            per_step("seed"),
            per_step("orderbot"),
            f"{_ratio(step['orderbot']['server'], step['seed']['server'])}× / "
            f"{_ratio(step['orderbot']['worker'], step['seed']['worker'])}×",
        ),
        (
            "CPU per step, server + worker + RabbitMQ + Redis + PostgreSQL",
            f"{_span(step['seed']['all'])} µs",
            f"{_span(step['orderbot']['all'])} µs",
            f"{_ratio(step['orderbot']['all'], step['seed']['all'])}×",
        ),
        (
            "CPU per step: RabbitMQ / Redis / PostgreSQL",
            services("seed"),
            services("orderbot"),
            " / ".join(f"{_ratio(step['orderbot'][k], step['seed'][k])}×" for k in SERVICES),
        ),
        (
            "webhook latency inside the pipeline, p50 / p99",
            latency("seed"),
            latency("orderbot"),
            "",
        ),
        (
            "replies correct, orders = completed dialogs",
            "yes" if ok["seed"] else "NO",
            "yes" if ok["orderbot"] else "NO",
            "",
        ),
    ]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


async def main_async(args: argparse.Namespace) -> int:
    source, bun = seed_dir(), bun_binary()
    bun_version = await build_seed(source, bun)
    log_dir = RESULTS / "logs" / "peer"
    log_dir.mkdir(parents=True, exist_ok=True)
    rounds: list[dict[str, Any]] = []
    for round_no in range(args.rounds):
        say(f"round {round_no + 1} of {args.rounds}")
        # Bounded: a shared broker that stalls must fail the run, not hang it.
        async with asyncio.timeout(2 * (args.ingest_seconds + args.pipeline_seconds) + 300):
            seed = await measure_seed(
                source,
                bun,
                log_dir,
                ingest_seconds=args.ingest_seconds,
                pipeline_seconds=args.pipeline_seconds,
                round_no=round_no,
            )
            ours = await measure_orderbot(log_dir, args, round_no)
        rounds.append({"seed": seed, "orderbot": ours})
        when = machine()
        path = save_json("peer", {"machine": when, "bun": bun_version, "rounds": rounds})
    print(
        f"Run of {when['date']} on {when['cores']} cores ({when['cpu']}); {args.rounds} rounds,"
        f" each the seed then orderbot; raw results in {path.relative_to(BENCH.parent)}\n"
    )
    print(table(rounds, bun_version))
    return 0 if all(_correct(r[x]["pipeline"]) for r in rounds for x in ("seed", "orderbot")) else 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ingest-seconds", type=float, default=7.0)
    parser.add_argument("--pipeline-seconds", type=float, default=12.0)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        sys.exit(asyncio.run(main_async(args)))
    sys.exit(uvloop.run(main_async(args)))


if __name__ == "__main__":
    main()
