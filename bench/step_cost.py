"""What one dialog step costs the services, orderbot's and the seed's, counted by the
services themselves.

`python -m bench.step_cost [--seconds 12]` runs the peer benchmark's pipeline (server,
one worker, 64 customers walking the whole dialog, closed loop) once for each system
against a Redis server of its own, started on a free port for this run, so that
Redis's counters and CPU are the run's alone; RabbitMQ and PostgreSQL are the shared
local ones. Per step it reports:

- Redis: the commands by name (`INFO commandstats`: calls, and the microseconds Redis
  itself spent in them) and the Redis process's CPU;
- PostgreSQL: transactions, rows written and rows read in the run's own database
  (`pg_stat_database`), and the CPU of that database's backends (read from /proc by
  their pids), which leaves out the shared server's background processes and every
  other database;
- RabbitMQ: the CPU of the whole broker (shared: an upper bound), the broker's own
  message counters (`rabbit_global_counters`, read with `rabbitmqctl eval`: messages
  received, confirmed, delivered and acknowledged, by queue type; broker-wide, so the
  run's own only on a quiet broker) and the bytes (and socket reads and writes) of each
  client connection (`rabbitmqctl list_connections`, grouped by connection name: the run's
  own processes name theirs `orderbot-<role>`). The `rabbitmqctl` calls are made
  outside the CPU window.

This is the arithmetic behind "what would the guarantees cost even if our Python cost
nothing": the services' CPU per step, at the rate each system reaches.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from bench.bodies import SEED_WEBHOOK_PATH, webhook_path
from bench.harness import (
    RESULTS,
    WEBHOOK_TOKEN,
    Stack,
    free_port,
    say,
    services_cpu,
    usage,
)
from bench.peer import Seed, build_seed, bun_binary, pipeline, seed_dir
from bench.report import machine, save_json

PG_COUNTERS = ("xact_commit", "tup_inserted", "tup_updated", "tup_deleted", "tup_fetched")


@contextlib.asynccontextmanager
async def private_redis() -> AsyncIterator[tuple[str, int]]:
    """A redis-server of this run's own, nothing kept on disk; its URL and pid."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("bench.step_cost: needs redis-server on PATH")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="step-cost-redis-")
    process = await asyncio.create_subprocess_exec(
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        workdir,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = Redis.from_url(url)
        try:
            async with asyncio.timeout(10):
                while True:
                    with contextlib.suppress(OSError, RedisConnectionError):
                        if await client.ping():
                            break
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()
        yield url, process.pid
    finally:
        process.terminate()
        await process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


async def _commandstats(url: str) -> dict[str, tuple[int, int]]:
    client = Redis.from_url(url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return {
        name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
        for name, v in stats.items()
    }


async def _database(admin_url: str, name: str) -> tuple[dict[str, int], list[int]]:
    conn = await asyncpg.connect(admin_url)
    try:
        row = await conn.fetchrow(
            f"SELECT {', '.join(PG_COUNTERS)} FROM pg_stat_database WHERE datname = $1",  # noqa: S608 (constant column names)
            name,
        )
        pids = [
            int(r["pid"])
            for r in await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", name)
        ]
    finally:
        await conn.close()
    return {k: int(row[k]) for k in PG_COUNTERS} if row else {}, pids


async def _rabbitmqctl(*args: str) -> Any:
    """`rabbitmqctl ARGS --formatter json -q`, parsed; None when it is not there or fails
    (the counters are then left out, the rest of the run stands)."""
    binary = shutil.which("rabbitmqctl")
    if binary is None:
        return None
    process = await asyncio.create_subprocess_exec(
        binary,
        *args,
        "--formatter",
        "json",
        "-q",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(60):
            out, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        return None
    try:
        return json.loads(out) if process.returncode == 0 else None
    except ValueError:
        return None


RABBIT_COUNTERS = {
    "published": ("amqp091", None, "messages_received_total"),
    "published_confirm": ("amqp091", None, "messages_received_confirm_total"),
    "confirmed": ("amqp091", None, "messages_confirmed_total"),
    "quorum_delivered": ("amqp091", "rabbit_quorum_queue", "messages_delivered_total"),
    "quorum_redelivered": ("amqp091", "rabbit_quorum_queue", "messages_redelivered_total"),
    "quorum_acked": ("amqp091", "rabbit_quorum_queue", "messages_acknowledged_total"),
    "classic_delivered": ("amqp091", "rabbit_classic_queue", "messages_delivered_total"),
    "classic_acked": ("amqp091", "rabbit_classic_queue", "messages_acknowledged_total"),
}


async def _rabbit_counters() -> dict[str, int]:
    """The broker's message counters, as RABBIT_COUNTERS names them."""
    # The JSON formatter turns the map's keys into strings of Erlang terms; the
    # overview is asked for as a list of {Protocol, QueueType, Counters} instead.
    answer = await _rabbitmqctl(
        "eval",
        "[{proplists:get_value(protocol, K), proplists:get_value(queue_type, K, none), V}"
        " || {K, V} <- maps:to_list(rabbit_global_counters:overview()),"
        " proplists:is_defined(protocol, K)].",
    )
    if not isinstance(answer, dict) or not isinstance(answer.get("value"), list):
        return {}
    groups = {
        (protocol, None if queue_type == "none" else queue_type): values
        for protocol, queue_type, values in answer["value"]
    }
    return {
        name: int(groups.get((protocol, queue_type), {}).get(counter, 0))
        for name, (protocol, queue_type, counter) in RABBIT_COUNTERS.items()
    }


async def _rabbit_connections() -> dict[str, dict[str, int]]:
    """Frames and bytes each client connection sent (recv at the broker) and received,
    keyed by the broker's name of the connection, with the client's name in it."""
    rows = await _rabbitmqctl(
        "list_connections",
        "name",
        "client_properties",
        "recv_cnt",
        "send_cnt",
        "recv_oct",
        "send_oct",
    )
    if not isinstance(rows, list):
        return {}
    connections: dict[str, dict[str, int]] = {}
    for row in rows:
        client = "?"
        for prop in row.get("client_properties") or []:
            if isinstance(prop, list) and len(prop) == 3 and prop[0] == "connection_name":
                client = str(prop[2])
        connections[f"{client} {row['name']}"] = {
            k: int(row.get(k) or 0) for k in ("recv_cnt", "send_cnt", "recv_oct", "send_oct")
        }
    return connections


def _by_client(
    start: dict[str, dict[str, int]], end: dict[str, dict[str, int]], per: int
) -> dict[str, dict[str, float]]:
    """Per client name (`orderbot-worker`, ...): bytes to and from the broker per step,
    and the broker's socket reads and writes (not frames: one read takes many);
    connections that opened during the run count from zero."""
    totals: dict[str, dict[str, int]] = {}
    for key, now in end.items():
        client = key.split(" ", 1)[0]
        before = start.get(key, {})
        total = totals.setdefault(client, dict.fromkeys(now, 0))
        for k, v in now.items():
            total[k] += v - before.get(k, 0)
    return {
        client: {
            "socket_reads_by_broker": round(t["recv_cnt"] / per, 2),
            "socket_writes_by_broker": round(t["send_cnt"] / per, 2),
            "bytes_to_broker": round(t["recv_oct"] / per),
            "bytes_from_broker": round(t["send_oct"] / per),
        }
        for client, t in sorted(totals.items())
        if t["recv_cnt"] or t["send_cnt"]
    }


def _cpu_s(pids: list[int]) -> dict[int, float]:
    return {pid: u.cpu_s for pid in pids if (u := usage(pid)) is not None}


class Counters:
    """The services' own counts over one pipeline run, divided by its steps."""

    def __init__(self, redis_url: str, redis_pid: int, admin_url: str, database: str) -> None:
        self.redis_url, self.redis_pid = redis_url, redis_pid
        self.admin_url, self.database = admin_url, database

    async def start(self) -> None:
        # pg_stat_database lags by up to PGSTAT_MIN_INTERVAL; the run is long beside it.
        self._commands = await _commandstats(self.redis_url)
        self._pg, pids = await _database(self.admin_url, self.database)
        self._backends = _cpu_s(pids)
        self._redis_cpu = _cpu_s([self.redis_pid])[self.redis_pid]
        self._amqp = await _rabbit_counters()
        self._connections = await _rabbit_connections()
        self._rabbit = services_cpu()["rabbitmq"]

    async def per_step(self, steps: int) -> dict[str, Any]:
        commands = await _commandstats(self.redis_url)
        await asyncio.sleep(1.0)  # pg_stat_database is flushed at most once a second
        pg, pids = await _database(self.admin_url, self.database)
        backends = _cpu_s(pids)
        # Backends that were there at the start and still are: the pools' connections.
        backend_cpu = sum(backends[p] - self._backends.get(p, 0.0) for p in backends)
        redis_cpu = _cpu_s([self.redis_pid])[self.redis_pid] - self._redis_cpu
        rabbit = services_cpu()["rabbitmq"] - self._rabbit
        per = max(steps, 1)
        amqp = await _rabbit_counters()
        connections = await _rabbit_connections()
        by_command = {
            name: {
                "calls": round((calls - self._commands.get(name, (0, 0))[0]) / per, 2),
                "usec": round((usec - self._commands.get(name, (0, 0))[1]) / per, 1),
            }
            for name, (calls, usec) in commands.items()
            if name not in ("info", "ping") and calls > self._commands.get(name, (0, 0))[0]
        }
        return {
            "steps": steps,
            "redis_commands": dict(sorted(by_command.items(), key=lambda kv: -kv[1]["usec"])),
            "redis_calls_per_step": round(sum(c["calls"] for c in by_command.values()), 2),
            "redis_command_us_per_step": round(sum(c["usec"] for c in by_command.values()), 1),
            "redis_cpu_us_per_step": round(redis_cpu / per * 1e6),
            "postgresql": {k: round((pg.get(k, 0) - self._pg.get(k, 0)) / per, 2) for k in pg},
            "postgresql_backend_cpu_us_per_step": round(backend_cpu / per * 1e6),
            "rabbitmq_cpu_us_per_step": round(rabbit / per * 1e6),
            "rabbitmq_messages": {
                k: round((v - self._amqp.get(k, 0)) / per, 2) for k, v in amqp.items()
            },
            "rabbitmq_connections": _by_client(self._connections, connections, per),
        }


async def measure_orderbot(redis: tuple[str, int], log_dir: Path, seconds: float) -> dict[str, Any]:
    api_port = free_port()
    async with Stack(log_dir, api_port, extra_env={"REDIS_URL": redis[0]}) as stack:
        assert stack.server is not None
        await stack.start_workers(1)
        counters = Counters(*redis, stack.admin_url, stack.namespace)
        await counters.start()
        run = await pipeline(
            "orderbot",
            port=stack.http_port,
            api_port=api_port,
            path=webhook_path(WEBHOOK_TOKEN),
            dialog="orderbot",
            procs=[stack.server, stack.workers[0]],
            log_dir=log_dir,
            seconds=seconds,
            first_client_id=3 * 10**9,
        )
        cost = await counters.per_step(int(run["steps_total"]))
        await stack.stop_workers()
    return {"steps_per_s": run["steps_per_s"], **cost}


async def measure_seed(redis: tuple[str, int], log_dir: Path, seconds: float) -> dict[str, Any]:
    source, bun = seed_dir(), bun_binary()
    await build_seed(source, bun)
    api_port = free_port()
    os.environ["REDIS_URL"] = redis[0]  # the seed's settings are read from the environment
    async with Seed(source, bun, log_dir, api_port) as seed:
        server = await seed.start_server()
        worker = await seed.start_worker()
        counters = Counters(*redis, seed.admin_url, seed.name)
        await counters.start()
        run = await pipeline(
            "seed",
            port=seed.http_port,
            api_port=api_port,
            path=SEED_WEBHOOK_PATH,
            dialog="seed",
            procs=[server, worker],
            log_dir=log_dir,
            seconds=seconds,
            first_client_id=4 * 10**9,
        )
        cost = await counters.per_step(int(run["steps_total"]))
    return {"steps_per_s": run["steps_per_s"], **cost}


def summary(results: dict[str, dict[str, Any]]) -> str:
    rows = [
        "| per step | " + " | ".join(results) + " |",
        "| --- |" + " --- |" * len(results),
    ]

    def row(label: str, pick: Any) -> None:
        rows.append(f"| {label} | " + " | ".join(str(pick(r)) for r in results.values()) + " |")

    row("steps/s", lambda r: f"{r['steps_per_s']:.0f}")
    row("Redis commands", lambda r: r["redis_calls_per_step"])
    row(
        "Redis: µs in commands / process CPU",
        lambda r: f"{r['redis_command_us_per_step']} / {r['redis_cpu_us_per_step']}",
    )
    row(
        "Redis: top commands (calls, µs)",
        lambda r: "; ".join(
            f"{name} {c['calls']}, {c['usec']}" for name, c in list(r["redis_commands"].items())[:5]
        ),
    )
    row("PostgreSQL: transactions", lambda r: r["postgresql"].get("xact_commit", "—"))
    row(
        "PostgreSQL: rows inserted / updated / fetched",
        lambda r: " / ".join(
            str(r["postgresql"].get(k, "—")) for k in ("tup_inserted", "tup_updated", "tup_fetched")
        ),
    )
    row(
        "PostgreSQL: the database's backends' CPU µs",
        lambda r: r["postgresql_backend_cpu_us_per_step"],
    )
    row("RabbitMQ CPU µs (the whole shared broker)", lambda r: r["rabbitmq_cpu_us_per_step"])
    row(
        "RabbitMQ: published / confirmed / delivered / acked (broker-wide)",
        lambda r: (
            " / ".join(
                str(r["rabbitmq_messages"].get(k, "—"))
                for k in ("published", "confirmed", "quorum_delivered", "quorum_acked")
            )
            + (
                f" (classic: {r['rabbitmq_messages'].get('classic_delivered')} /"
                f" {r['rabbitmq_messages'].get('classic_acked')})"
            )
        ),
    )
    row(
        "RabbitMQ: bytes to / from broker, by connection",
        lambda r: "; ".join(
            f"{client} {f['bytes_to_broker']} B / {f['bytes_from_broker']} B"
            for client, f in r["rabbitmq_connections"].items()
        ),
    )
    return "\n".join(rows)


async def main_async(args: argparse.Namespace) -> None:
    log_dir = RESULTS / "logs" / "step-cost"
    log_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    async with private_redis() as redis:
        if os.environ.get("PEER_SEED_DIR"):
            say("the seed")
            results["the seed"] = await measure_seed(redis, log_dir, args.seconds)
        say("orderbot")
        results["orderbot"] = await measure_orderbot(redis, log_dir, args.seconds)
    path = save_json("step-cost", {"machine": machine(), "results": results})
    print(f"Run of {machine()['date']}; raw results in {path}\n")
    print(summary(results))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=12.0)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_async(args))
        sys.exit(0)
    uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
