"""The worker's floor with its libraries: one dialog step's I/O and nothing else, next to
orderbot's worker under the same load.

`python -m bench.bare_step [--rounds 3] [--runs 2] [--seconds 10] [--rate R] [--sides S]
[--profile N]` starts one stack (the server, bench/pipeline.py's 64 customers and its fake
Chat2Desk API, RabbitMQ and PostgreSQL shared, a Redis server of the run's own as in
bench/step_cost.py) and runs, in turns, orderbot's worker (`python -m worker`) and the bare
worker below (`python -m bench.bare_step worker`), one at a time against the same server,
queues, database and Redis. Per run it reads each side's CPU per step: the worker process,
the run's Redis, the run's database's backends, the whole (shared) broker, and the services'
own counts (bench/step_cost.py's `Counters`), all divided by the run's steps. CPU per step
falls as the rate rises (bigger batches everywhere), and the bare worker reaches a higher
rate in a closed loop: `--rate R` drives both in an open loop at R steps/s instead, the same
batches for both. `--sides orderbot,bare,bare-redis,bare-http` adds the floor without
PostgreSQL and without Redis too, which splits it by service; `bare-plain` is the floor
with redis-py's own calls (one round trip each) instead of orderbot's RedisBatch. With
`--profile N` it then records N seconds of py-spy of each worker in the closed loop
(bench/profile.py's summary, and both workers' busy samples per 1,000 steps).

The bare worker does, per message, the I/O of orderbot's happy-path step, with the same
libraries opened the same way (orderbot's BrokerLink, open_redis, open_postgres and
open_http, on uvloop), and no logic but what picks the next key or value:

- the delivery, on the same 16 single-active-consumer quorum partitions, one plain channel
  each at the worker's prefetch, taken from aiormq as it comes (as orderbot's consumer
  takes it), and WORKER_CONCURRENCY steps at once;
- `begin`: orderbot's own Lua (lock SET NX, one EXISTS for marker and hand-off, the
  customer's token bucket, ZCARD, GET state, GET owed rating) by EVALSHA, through
  orderbot's RedisBatch (concurrent steps share one pipelined round trip: the group commit
  redis-py itself does not do);
- on the fifth step, the order insert (orderbot's statement, one round trip) and its live
  event (one XADD script run, awaited, as the step does);
- the send-rate token (orderbot's script, its own round trip before the POST), then the
  reply POST to the fake API with aiohttp's client, its answer read and its message id
  parsed, and the own-message SET queued to ride with the commit;
- history: the inbound and the reply row, gathered from concurrent steps by one writer
  task and written as one statement (orderbot's `store.write` SQL), the step waiting for
  its rows before it commits; the written rows' live events as one XADD script run per
  batch, riding with the next Redis call;
- `commit`: orderbot's Lua (lock check, SET state, SET marker, DEL lock) by EVALSHA;
- the ack, sent together like orderbot's consumer: every 0.1 s for all channels, or at
  once when half a channel's prefetch waits, one `multiple` ack up to the highest tag
  below which all are handled.

Left out, each a per-step cost of orderbot's that is not I/O: pydantic (the envelope, the
state, the history entries, the events), the dialog itself, logging, metrics, the
per-customer arrival order, the lock-renewal timer, the retry and timeout wrappers, the
consumer's own task per message; and the roll call's heartbeat and the `UntaggedMarkers`
PTTL (a call every few seconds, a minute). The state written is a small JSON object with
the turn count, which picks the step that places the order, so orders = completed dialogs
holds for the bare worker too; the happy path has one reply a step, and so has the bare
worker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from bench.harness import RESULTS, Proc, Stack, free_port, say, spawn

OWN_MESSAGE_MS = 86_400_000  # OwnMessages' TTL
RIDE_WITHIN = 0.05  # OwnMessages' ride
ACK_WINDOW = 0.1  # orderbot.amqp.consumer.ACK_WINDOW
NOTICE_MS = 60_000
ORDER_TURN = 4  # the happy path's confirmation: the fifth message
CUSTOMERS = 64
WARMUP = 1.0


# --- the bare worker ----------------------------------------------------------------------


class Acks:
    """One channel's acks, sent together: `floor` is the highest tag up to which every
    delivery was handled, so a `multiple` ack on it covers nothing still running."""

    def __init__(self, channel: Any, clock: AckClock, prefetch: int) -> None:
        self._channel = channel  # aiormq's: its basic_ack, without aio-pika's message
        self._clock = clock
        self._eager = max(1, prefetch // 2)
        self._floor = 0
        self._above: set[int] = set()
        self._waiting: set[int] = set()
        self._soon = False
        self._turn = asyncio.Lock()

    def handled(self, message: Any) -> None:
        tag = message.delivery_tag
        self._waiting.add(tag)
        self._above.add(tag)
        while self._floor + 1 in self._above:
            self._floor += 1
            self._above.discard(self._floor)
        if len(self._waiting) < self._eager:
            self._clock.due(self)
        elif not self._soon:
            self._soon = True
            asyncio.get_running_loop().call_soon(self.send_now)

    def send_now(self) -> None:
        self._soon = False
        if self._waiting:
            task = asyncio.create_task(self.send())
            self._clock.sends.add(task)
            task.add_done_callback(self._clock.sends.discard)

    async def send(self) -> None:
        async with self._turn:
            waiting, self._waiting = self._waiting, set()
            covered = [tag for tag in waiting if tag <= self._floor]
            if covered:
                await self._channel.basic_ack(max(covered), multiple=len(covered) > 1)
            for tag in sorted(waiting - set(covered)):
                await self._channel.basic_ack(tag)


class AckClock:
    """Every ACK_WINDOW, the acks waiting on every channel go out in one burst."""

    def __init__(self) -> None:
        self._due: set[Acks] = set()
        self._timer: asyncio.TimerHandle | None = None
        self.sends: set[asyncio.Task[None]] = set()

    def due(self, acks: Acks) -> None:
        self._due.add(acks)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(ACK_WINDOW, self._tick)

    def _tick(self) -> None:
        self._timer = None
        due, self._due = self._due, set()
        for acks in due:
            acks.send_now()


class History:
    """Rows of concurrent steps, written by one task as one statement; a step's `settle`
    waits until its rows are written. The rows' live events follow, one script run per
    batch, riding with the next Redis call."""

    def __init__(self, pool: Any, publish: Callable[[list[Any]], None]) -> None:
        self._pool = pool
        self._publish = publish
        self._rows: list[tuple[Any, ...]] = []
        self._recorded = 0
        self._written = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._arrived = asyncio.Event()

    def record(self, row: tuple[Any, ...]) -> None:
        self._rows.append(row)
        self._recorded += 1
        self._arrived.set()

    async def settle(self) -> None:
        target = self._recorded
        if self._written >= target:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        await future

    async def run(self) -> None:
        from orderbot.history.store import _WRITE

        while True:
            await self._arrived.wait()
            self._arrived.clear()
            rows, self._rows = self._rows, []
            upto = self._recorded
            if not rows:
                continue
            columns = [list(column) for column in zip(*rows, strict=True)]
            async with self._pool.acquire() as conn:
                written = await conn.fetch(_WRITE, *columns)
            self._written = upto
            waiters, self._waiters = self._waiters, []
            for target, future in waiters:
                if target <= upto:
                    future.set_result(None)
                else:
                    self._waiters.append((target, future))
            if written:
                self._publish(written)


class BareStep:
    """One step's I/O per delivery, as the module's docstring lists it."""

    def __init__(
        self, settings: Any, redis: Any, pool: Any, session: Any, parts: frozenset[str]
    ) -> None:
        from yarl import URL

        from orderbot.conversation.batch import batch_for
        from orderbot.conversation.dialog_store import _BEGIN, _COMMIT
        from orderbot.delivery.rate_limit import _TAKE
        from orderbot.events.bus import _XADD_ALL
        from orderbot.orders.store import _PLACE

        batch = batch_for(redis)
        self._batch = batch
        # "plain": redis-py's own client instead, one round trip per call from its pool.
        self._plain = "plain" in parts
        scripts = redis.register_script if self._plain else batch.script
        self._redis = redis
        self._begin: Any = scripts(_BEGIN)
        self._commit: Any = scripts(_COMMIT)
        self._take: Any = scripts(_TAKE)
        self._xadd: Any = scripts(_XADD_ALL)
        self._place = _PLACE
        self._pool = pool
        self._session = session
        self._history = History(pool, self._tell)
        self._p = settings.redis_key_prefix
        self._lease_ms = int(settings.lock_timeout.total_seconds() * 1000)
        self._state_ms = int(settings.dialog_ttl.total_seconds() * 1000)
        self._dedupe_ms = int(settings.dedupe_ttl.total_seconds() * 1000)
        per_minute = settings.webhook_rate_limit_customer
        self._budget = (per_minute / 60_000, per_minute)
        rate = settings.chat2desk_rate_limit
        self._send_rate = (rate / 60_000, max(1.0, rate / 60))
        self._stream_length = settings.events_stream_length
        self._ride = settings.events_publish_timeout.total_seconds() / 5
        self._url = URL(f"{settings.chat2desk_api_url.rstrip('/')}/v1/messages")
        token = settings.chat2desk_api_token.get_secret_value()
        self._headers = {"Authorization": token, "Content-Type": "application/json"}
        self._slots = asyncio.Semaphore(settings.worker_concurrency)
        self._tokens = 0
        self._redis_on = "redis" in parts
        self._postgres_on = "postgres" in parts
        self._turns: dict[str, int] = {}  # the turn count when Redis is left out
        self._fired: set[asyncio.Future[Any]] = set()

    def start_history(self) -> asyncio.Task[None]:
        return asyncio.create_task(self._history.run())

    def _tell(self, rows: list[Any]) -> None:
        by_tenant: dict[str, list[str]] = {}
        for row in rows:
            by_tenant.setdefault(row["tenant"], []).append(
                orjson.dumps(
                    {
                        "tenant": row["tenant"],
                        "kind": "message" if row["created"] else "status",
                        "at": datetime.now(UTC),
                        "data": {
                            "conversation_id": row["conversation_id"],
                            "message_id": row["id"],
                            "direction": row["direction"],
                            "text": row["text"],
                            "provider_message_id": row["provider_message_id"],
                            "status": row["status"],
                        },
                    }
                ).decode()
            )
        for tenant, bodies in by_tenant.items():
            if self._plain:
                self._fire(
                    self._xadd(
                        keys=[f"{self._p}events:{tenant}"], args=[self._stream_length, *bodies]
                    )
                )
                continue
            self._batch.call(
                (1, f"{self._p}events:{tenant}", self._stream_length, *bodies),
                script=self._xadd,
                within=self._ride,
            ).add_done_callback(_quiet)

    def _fire(self, call: Any) -> None:
        """A call nobody waits for, on redis-py's own client."""
        task = asyncio.ensure_future(call)
        self._fired.add(task)
        task.add_done_callback(self._fired.discard)
        task.add_done_callback(_quiet)

    async def __call__(self, acks: Acks, message: Any) -> None:
        raw = orjson.loads(message.body)
        conversation = raw["conversation"]
        tenant, provider = conversation["tenant"], conversation["provider"]
        client_id = conversation["client_id"]
        message_id = raw["message_id"]
        customer = "{" + f"{tenant}:{provider}:{client_id}" + "}"
        p = self._p
        redis, postgres = self._redis_on, self._postgres_on
        async with self._slots:
            if postgres:
                received = datetime.fromisoformat(raw["received_at"])
                self._history.record(
                    (tenant, provider, client_id, raw.get("client_phone"), "in", message_id,
                     message_id, None, raw["text"], received, "received", received, None)
                )  # fmt: skip
            lock = f"{p}lock:{customer}"
            processed = f"{p}processed:{customer}:{message_id}"
            dialog = f"{p}dialog:{customer}"
            self._tokens += 1
            token = f"bare-{self._tokens:x}"
            if redis:
                while True:
                    begun = await self._begin(
                        keys=[lock, processed, dialog, f"{p}outbox:{customer}",
                              f"{p}ratelimit:customer:{customer}",
                              f"{p}ratelimit:notice:{customer}", f"{p}handoff:{customer}",
                              f"{p}rating:{customer}"],
                        args=[token, self._lease_ms, *self._budget, NOTICE_MS],
                    )  # fmt: skip
                    if begun is not None:
                        break
                    await asyncio.sleep(0.005)
                if int(begun[0]) == 1:  # applied before: only the ack
                    acks.handled(message)
                    return
                turns = orjson.loads(begun[2])["turns"] if begun[2] else 0
            else:
                turns = self._turns.get(customer, 0)
            if postgres and turns % 5 == ORDER_TURN:
                order_id = await self._pool.fetchval(
                    self._place, tenant, provider, message_id, client_id, "+996555123456",
                    "ул. Киевская 95, кв 12", 3, "ru", conversation.get("transport"),
                    conversation.get("channel_id"), None, None, "[]",
                )  # fmt: skip
                if redis:
                    event = orjson.dumps(
                        {"tenant": tenant, "kind": "order", "data": {"order_id": order_id}}
                    ).decode()
                    await self._xadd(
                        keys=[f"{p}events:{tenant}"], args=[self._stream_length, event]
                    )
            if redis:
                await self._take(
                    keys=[f"{p}ratelimit:send:{provider}:{tenant}"], args=list(self._send_rate)
                )
            body: dict[str, Any] = {
                "client_id": int(client_id),
                "text": REPLY,
                "type": "to_client",
                "transport": conversation.get("transport"),
                "channel_id": int(conversation["channel_id"]),
            }
            async with self._session.post(
                self._url, data=orjson.dumps(body), headers=self._headers
            ) as response:
                if response.status >= 300:
                    raise RuntimeError(f"the fake API answered {response.status}")
                answer = orjson.loads(await response.read())
            sent_id = str(answer["data"]["message_id"])
            if redis and self._plain:
                own = f"{p}own:{tenant}:{provider}:{sent_id}"
                self._fire(self._redis.set(own, client_id, px=OWN_MESSAGE_MS))
            elif redis:
                self._batch.call(
                    ("SET", f"{p}own:{tenant}:{provider}:{sent_id}", client_id, "PX",
                     OWN_MESSAGE_MS),
                    within=RIDE_WITHIN,
                ).add_done_callback(_quiet)  # fmt: skip
            if postgres:
                now = datetime.now(UTC)
                self._history.record(
                    (tenant, provider, client_id, None, "out", f"{message_id}:0", sent_id,
                     f"{message_id}:0", REPLY, now, "sent", now, None)
                )  # fmt: skip
                await self._history.settle()
            if redis:
                state = orjson.dumps({"step": "next", "turns": turns + 1}).decode()
                written = await self._commit(
                    keys=[lock, dialog, processed],
                    args=[token, state, self._state_ms, self._dedupe_ms, "1", turns + 1, turns],
                )
                if not written:
                    raise RuntimeError("lost the lock before the commit")
            else:
                self._turns[customer] = turns + 1
        acks.handled(message)


# About the happy path's replies' length (the driver's dialog: 50-245 characters).
REPLY = "Спасибо! Укажите, пожалуйста, адрес доставки: улицу, дом и квартиру."


def _quiet(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


async def bare_worker() -> None:
    import aio_pika

    from orderbot.amqp.link import BrokerLink
    from orderbot.config.settings import Settings
    from orderbot.runtime.resources import open_http, open_postgres, open_redis

    settings = Settings(_env_file=None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        broker = await stack.enter_async_context(BrokerLink(settings, "bare-step"))
        redis = await stack.enter_async_context(open_redis(settings))
        pool = await stack.enter_async_context(
            open_postgres(settings, max_size=settings.worker_concurrency, stop=stop)
        )
        session = await stack.enter_async_context(open_http(settings))
        if pool is None or not await broker.wait_connected(stop):
            return
        parts = frozenset(os.environ.get("BARE_STEP_PARTS", "redis,postgres").split(","))
        step = BareStep(settings, redis, pool, session, parts)
        history = step.start_history()
        clock = AckClock()
        channels: list[tuple[Any, Acks]] = []
        for name in broker.topology.partitions:
            channel = aio_pika.Channel(broker.connection, publisher_confirms=False)
            await channel.initialize()
            await channel.set_qos(prefetch_count=settings.worker_concurrency)
            await channel.declare_queue(name, passive=True)
            underlay = await channel.get_underlay_channel()
            acks = Acks(underlay, clock, settings.worker_concurrency)
            # aiormq's deliveries as they come (each in a task of aiormq's), as orderbot's
            # consumer takes them: aio-pika's IncomingMessage decodes every property.
            await underlay.basic_consume(name, partial(step, acks))
            channels.append((channel, acks))
        await stop.wait()
        for channel, acks in channels:
            await acks.send()
            await channel.close()
        history.cancel()
        await asyncio.gather(history, *clock.sends, return_exceptions=True)


# --- the comparison -----------------------------------------------------------------------


async def _wait_consumed(stack: Stack, within: float = 30.0) -> None:
    """Until every partition has its one consumer."""
    async with asyncio.timeout(within):
        while True:
            with contextlib.suppress(Exception):
                async with stack.amqp() as channel:
                    counts = []
                    for name in stack.topology.partitions:
                        queue = await channel.declare_queue(name, passive=True)
                        counts.append(queue.declaration_result.consumer_count or 0)
                if all(c == 1 for c in counts):
                    return
            await asyncio.sleep(0.1)


async def _start(stack: Stack, side: str, log_dir: Path) -> Proc:
    if side == "orderbot":
        await stack.start_workers(1)
        return stack.workers[0]
    env = {**stack.env, "BARE_STEP_PARTS": PARTS[side]}
    proc = await spawn(side, ["-m", "bench.bare_step", "worker"], env, log_dir)
    try:
        await _wait_consumed(stack)
    except TimeoutError:
        raise RuntimeError(f"the bare worker did not start:\n{proc.tail()}") from None
    return proc


async def _stop(stack: Stack, side: str, proc: Proc) -> int:
    if side == "orderbot":
        return (await stack.stop_workers())[proc.name]
    return await proc.stop()


async def _one_run(
    stack: Stack,
    drivers: Any,
    counters: Any,
    side: str,
    seconds: float,
    rate: float | None,
    log_dir: Path,
) -> dict[str, Any]:
    """One driver run on a worker of `side`, closed loop (`rate` None) or open at `rate`."""
    proc = await _start(stack, side, log_dir)
    orders_before, history_before = await stack.count_orders(), await stack.count_history()
    await counters.start()
    before = proc.usage()
    result = await drivers.run(
        mode="closed" if rate is None else "open",
        seconds=seconds,
        warmup=WARMUP,
        customers=CUSTOMERS,
        rate=rate,
    )
    after = proc.usage()
    steps = int(result["steps_total"])
    cost = await counters.per_step(steps)
    code = await _stop(stack, side, proc)
    if before is None or after is None:
        raise RuntimeError(f"the {side} worker's CPU time could not be read:\n{proc.tail()}")
    orders = await stack.count_orders() - orders_before
    rows = await stack.count_history() - history_before
    evalsha = cost["redis_commands"].get("evalsha", {}).get("calls")
    return {
        "steps_per_s": result["steps_per_s"],
        "steps": steps,
        "worker_cpu_us_per_step": round((after.cpu_s - before.cpu_s) / max(steps, 1) * 1e6),
        "redis_cpu_us_per_step": cost["redis_cpu_us_per_step"],
        "postgresql_backend_cpu_us_per_step": cost["postgresql_backend_cpu_us_per_step"],
        "rabbitmq_cpu_us_per_step": cost["rabbitmq_cpu_us_per_step"],
        "redis_calls_per_step": cost["redis_calls_per_step"],
        "evalsha_per_step": evalsha,
        "postgresql": cost["postgresql"],
        "rabbitmq_messages": cost["rabbitmq_messages"],
        "rabbitmq_connections": cost["rabbitmq_connections"],
        "history_rows_per_step": round(rows / max(steps, 1), 2),
        "orders": orders,
        "orders_completed": result["orders_total"],
        # Left out with PostgreSQL: nothing to count.
        "orders_right": orders == result["orders_total"]
        if "postgres" in PARTS.get(side, "postgres")
        else None,
        "lost": result["lost"],
        "unexpected_replies": result["unexpected_replies"],
        "rejected": result["rejected"],
        "machine_busy": result["machine_busy"],
        "exit_code": code,
    }


async def _profile(
    stack: Stack, drivers: Any, side: str, seconds: float, log_dir: Path
) -> dict[str, Any]:
    from bench.profile import OUT, record, recorders_done, summarize

    OUT.mkdir(parents=True, exist_ok=True)
    proc = await _start(stack, side, log_dir)
    path = await record(proc, seconds, f"worker-{side}")
    result = await drivers.run(mode="closed", seconds=seconds, warmup=0, customers=CUSTOMERS)
    await recorders_done()
    await _stop(stack, side, proc)
    steps = float(result["steps_total"])
    return {
        "load": result["steps_per_s"],
        "per_1000_steps": per_steps(path, steps),
        **summarize(path, top=40),
    }


def _kind(frames: list[str]) -> str:
    """bench/profile.py's component of a sample, except that Redis is split in two: the
    round trips (since the batch writes to the stream itself, its socket writes and
    reads are under `_round_trip`, not in redis-py) and the batch's queueing and packing,
    which both workers have."""
    from bench.profile import component

    if any("_round_trip (orderbot/conversation/batch.py" in f or "(redis/" in f for f in frames):
        return "Redis I/O (round trips)"
    found = component(frames)
    if found == "orderbot code" and any("(orderbot/conversation/batch.py" in f for f in frames):
        return "RedisBatch, queueing and packing"
    return found


def per_steps(path: Path, steps: float) -> dict[str, float]:
    """Busy samples (10 ms each) per 1,000 steps by `_kind`: comparable between two
    workers in a way shares of two different totals are not."""
    import collections

    from bench.profile import IDLE_LEAVES, _short

    counts: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [_short(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if stack and frames and not frames[-1].startswith(IDLE_LEAVES):
            counts[_kind(frames)] += int(count)
    per = {kind: round(1000 * n / max(steps, 1.0), 1) for kind, n in counts.most_common()}
    return {**per, "total": round(1000 * sum(counts.values()) / max(steps, 1.0), 1)}


# The bare worker's levels: the full floor, and the same without PostgreSQL (history and
# the order insert), then without Redis too (the consume, the POST and the ack alone).
# "bare-plain": the full floor with redis-py's own calls instead of orderbot's RedisBatch.
PARTS = {
    "bare": "redis,postgres",
    "bare-redis": "redis",
    "bare-http": "",
    "bare-plain": "redis,postgres,plain",
}
FIGURES = (
    "worker_cpu_us_per_step",
    "redis_cpu_us_per_step",
    "postgresql_backend_cpu_us_per_step",
    "rabbitmq_cpu_us_per_step",
)


async def compare(
    sides: tuple[str, ...],
    rounds: int,
    runs: int,
    seconds: float,
    rate: float | None,
    profile: float,
) -> dict[str, Any]:
    from bench.pipeline import DriverRuns
    from bench.report import machine, save_json
    from bench.step_cost import Counters, private_redis

    log_dir = RESULTS / "logs" / "bare-step"
    log_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    profiles: dict[str, Any] = {}
    async with (
        private_redis() as redis,
        Stack(log_dir, free_port(), extra_env={"REDIS_URL": redis[0]}) as stack,
    ):
        drivers = DriverRuns(stack, log_dir)
        counters = Counters(*redis, stack.admin_url, stack.namespace)
        for round_ in range(1, rounds + 1):
            for side in sides:
                for _ in range(runs):
                    say(f"round {round_}: the {side} worker")
                    run = await _one_run(stack, drivers, counters, side, seconds, rate, log_dir)
                    results[side].append(run)
                    print(side, {k: run[k] for k in ("steps_per_s", *FIGURES)}, flush=True)
        if profile > 0:
            for side in ("orderbot", "bare"):
                say(f"py-spy on the {side} worker")
                profiles[side] = await _profile(stack, drivers, side, profile, log_dir)
    medians = {
        figure: {side: statistics.median(r[figure] for r in results[side]) for side in sides}
        for figure in FIGURES
    }
    summary = {
        "machine": machine(),
        "sides": sides,
        "offered_rate": rate,
        "runs": results,
        "medians": medians,
        "profiles": profiles,
    }
    save_json("bare-step", summary)
    return summary


LABELS = {
    "orderbot": "orderbot's worker",
    "bare": "the bare worker (floor)",
    "bare-redis": "bare, without PostgreSQL",
    "bare-http": "bare, consume + POST + ack only",
    "bare-plain": "bare, redis-py's own calls",
}


def table(summary: dict[str, Any]) -> str:
    """Ranges of the runs (median in brackets), and orderbot's median over the floor's."""
    runs, sides = summary["runs"], summary["sides"]
    ratio_of = "orderbot" in sides and "bare" in sides
    rows = [
        "| per step | "
        + " | ".join(LABELS[s] for s in sides)
        + (" | orderbot ÷ floor |" if ratio_of else " |"),
        "| --- |" + " --- |" * (len(sides) + ratio_of),
    ]
    labels = {
        "worker_cpu_us_per_step": "worker process CPU, µs",
        "redis_cpu_us_per_step": "Redis CPU (the run's own server), µs",
        "postgresql_backend_cpu_us_per_step": "PostgreSQL CPU (the run's backends), µs",
        "rabbitmq_cpu_us_per_step": "RabbitMQ CPU (the whole shared broker), µs",
    }
    for figure, label in labels.items():
        cells = []
        for side in sides:
            values = [r[figure] for r in runs[side]]
            cells.append(f"{min(values):,}–{max(values):,} ({statistics.median(values):,.0f})")
        if ratio_of:
            medians = summary["medians"][figure]
            ratio = medians["orderbot"] / medians["bare"] if medians["bare"] else float("nan")
            cells.append(f"{ratio:.2f}×")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")

    def spread(key: str, pick: Callable[[dict[str, Any]], Any]) -> None:
        cells = []
        for side in sides:
            values = sorted({pick(r) for r in runs[side]})
            cells.append(f"{values[0]}–{values[-1]}" if len(values) > 1 else f"{values[0]}")
        rows.append(f"| {key} | " + " | ".join(cells) + (" | |" if ratio_of else " |"))

    spread("steps/s", lambda r: r["steps_per_s"])
    spread("EVALSHA", lambda r: r["evalsha_per_step"])
    spread("Redis commands (inside scripts too)", lambda r: r["redis_calls_per_step"])
    spread("PostgreSQL transactions", lambda r: r["postgresql"].get("xact_commit"))
    spread("history rows", lambda r: r["history_rows_per_step"])
    spread(
        "bytes worker → broker",
        lambda r: next(
            (
                c["bytes_to_broker"]
                for n, c in r["rabbitmq_connections"].items()
                if "worker" in n or "bare" in n
            ),
            "—",
        ),
    )
    spread(
        "replies lost / unexpected, orders = completed dialogs",
        lambda r: (
            f"{r['lost']} / {r['unexpected_replies']}, "
            + {True: "yes", False: "NO", None: "—"}[r["orders_right"]]
        ),
    )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("role", nargs="?", choices=("compare", "worker"), default="compare")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--sides",
        default="orderbot,bare",
        help=f"the workers taking turns, of orderbot and {', '.join(PARTS)}",
    )
    parser.add_argument(
        "--rate", type=float, default=None, help="open loop at this many steps/s (default: closed)"
    )
    parser.add_argument("--profile", type=float, default=0.0, help="py-spy seconds per worker")
    args = parser.parse_args()
    import uvloop

    if args.role == "worker":
        uvloop.run(bare_worker())
        return
    sides = tuple(args.sides.split(","))
    if not set(sides) <= {"orderbot", *PARTS}:
        parser.error(f"--sides: of orderbot and {', '.join(PARTS)}")
    summary = uvloop.run(
        compare(sides, args.rounds, args.runs, args.seconds, args.rate, args.profile)
    )
    print(f"Run of {summary['machine']['date']}\n")
    print(table(summary))
    profiles = summary["profiles"]
    if profiles:
        print("\n| busy samples per 1,000 steps | " + " | ".join(profiles) + " |")
        print("| --- |" + " --- |" * len(profiles))
        kinds = dict.fromkeys(k for found in profiles.values() for k in found["per_1000_steps"])
        for kind in kinds:
            cells = [str(found["per_1000_steps"].get(kind, 0.0)) for found in profiles.values()]
            print(f"| {kind} | " + " | ".join(cells) + " |")
    for side, found in profiles.items():
        print(f"\n=== {side}: {found['samples']} busy samples at {found['load']} steps/s")
        for kind in ("components", "own"):
            print(f"--- {kind}")
            for frame, pct in found[kind][:30]:
                print(f"{pct:6.1f}%  {frame}")


if __name__ == "__main__":
    main()
