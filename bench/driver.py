"""Simulated customers and a fake Chat2Desk API, in one process of their own.

`python -m bench.driver ...` serves the fake send API on `--api-port` (the
workers' CHAT2DESK_API_URL) and runs customers who each walk the whole order
dialog through the real server: post a message, wait for the bot's answer to
arrive at the fake API, post the next. Keeping the customers and the fake API in
one process lets a reply be matched to the step that caused it without any
cross-process clock.

Closed loop: `--customers` customers answer as soon as they are answered.
Open loop: steps are due at `--rate` per second, each taken by an idle customer
(a new one when all are busy), so the offered load does not bend to the
system's speed. Bounded by `--duration` and `--max-steps`. With `--progress` it
prints a JSON line of steps done twice a second (the memory soak reads them);
the last line is the result.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import sys
import time
from typing import Any

import orjson
from aiohttp import web

from bench.bodies import HAPPY_PATH, SEED_HAPPY_PATH, chat2desk_body, webhook_path
from bench.httpclient import ConnectionPool, post_bytes
from bench.stats import summarize_ms
from dialog import DialogState, advance

REPLY_TIMEOUT = 30.0
SEND_OK = orjson.dumps({"status": "success", "data": {"message_id": 1}})


def replies_per_turn() -> tuple[int, ...]:
    """How many replies each message of the happy path gets: the dialog is the oracle."""
    state = DialogState()
    counts = []
    for text in HAPPY_PATH:
        result = advance(state, text)
        state = result.state
        counts.append(len(result.replies))
    return tuple(counts)


class Customer:
    def __init__(self, client_id: int) -> None:
        self.client_id = client_id
        self.turn = 0
        self.waiter: asyncio.Future[None] | None = None
        self.replies_due = 0
        self.reply_at = 0.0


class Driver:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.pool = ConnectionPool("127.0.0.1", args.server_port, args.connections)
        if args.dialog == "seed":  # the peer of bench/peer.py: its path, words, one reply each
            self.path = args.path
            self.texts = SEED_HAPPY_PATH
            self.replies = (1,) * len(SEED_HAPPY_PATH)
        else:
            self.path = args.path or webhook_path(args.token)
            self.texts = HAPPY_PATH
            self.replies = replies_per_turn()
        self.customers: dict[int, Customer] = {}
        self.ids = itertools.count(args.first_client_id)
        self.accept_to_reply: list[float] = []
        self.post_to_reply: list[float] = []
        self.webhook: list[float] = []
        self.steps = 0
        self.steps_total = 0
        self.orders = 0
        self.orders_total = 0
        self.rejected: dict[str, int] = {}
        self.lost = 0
        self.unexpected = 0
        self.measure_from = 0.0
        self.measure_until = 0.0

    def new_customer(self) -> Customer:
        customer = Customer(next(self.ids))
        self.customers[customer.client_id] = customer
        return customer

    async def on_send(self, request: web.Request) -> web.Response:
        """The fake `POST /v1/messages`: note the reply, answer like Chat2Desk."""
        body = orjson.loads(await request.read())
        customer = self.customers.get(int(body["client_id"]))
        if customer is None or customer.waiter is None or customer.waiter.done():
            self.unexpected += 1  # a repeat (at-least-once) or a stray: counted, not matched
        else:
            customer.replies_due -= 1
            if customer.replies_due <= 0:
                customer.reply_at = time.perf_counter()
                customer.waiter.set_result(None)
        return web.Response(body=SEND_OK, content_type="application/json")

    async def step(self, customer: Customer) -> bool:
        """One message and its answer; False if the customer cannot go on."""
        index = customer.turn % len(self.texts)
        customer.waiter = asyncio.get_running_loop().create_future()
        customer.replies_due = self.replies[index]
        body = chat2desk_body(
            f"{self.args.run_id}-{customer.client_id}-{customer.turn}",
            customer.client_id,
            self.texts[index],
        )
        sent = time.perf_counter()
        failure = ""
        try:
            status = await self.pool.request(
                post_bytes("127.0.0.1", self.args.server_port, self.path, body)
            )
        except Exception as exc:
            status = 0
            failure = type(exc).__name__
        accepted = time.perf_counter()
        if status != 200:
            key = failure if status == 0 else str(status)
            self.rejected[key] = self.rejected.get(key, 0) + 1
            customer.waiter = None
            await asyncio.sleep(0.05)  # as a provider retries; the same turn is sent again
            return True
        try:
            await asyncio.wait_for(customer.waiter, REPLY_TIMEOUT)
        except TimeoutError:
            self.lost += 1
            return False
        customer.turn += 1
        completed_order = customer.turn % len(self.texts) == 0
        self.steps_total += 1
        self.orders_total += completed_order
        if self.measure_from <= accepted < self.measure_until:
            self.steps += 1
            self.orders += completed_order
            self.accept_to_reply.append(max(0.0, customer.reply_at - accepted))
            self.post_to_reply.append(customer.reply_at - sent)
            self.webhook.append(accepted - sent)
        return True

    def more(self) -> bool:
        return time.perf_counter() < self.measure_until and self.steps_total < self.args.max_steps

    async def closed(self) -> None:
        async def walk(customer: Customer) -> None:
            while self.more() and await self.step(customer):
                pass

        await asyncio.gather(*(walk(self.new_customer()) for _ in range(self.args.customers)))

    async def open(self, start: float) -> None:
        idle: collections.deque[Customer] = collections.deque(
            self.new_customer() for _ in range(self.args.customers)
        )
        tasks: set[asyncio.Task[None]] = set()

        async def one(customer: Customer) -> None:
            if await self.step(customer):
                idle.append(customer)

        interval = 1.0 / self.args.rate
        for i in itertools.count():
            due = start + i * interval
            if due >= self.measure_until or self.steps_total >= self.args.max_steps:
                break
            delay = due - time.perf_counter()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            customer = idle.popleft() if idle else self.new_customer()
            task = asyncio.create_task(one(customer))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=REPLY_TIMEOUT + 5)

    async def report_progress(self) -> None:
        while True:
            line = {"progress": self.steps_total, "t": round(time.perf_counter(), 3)}
            sys.stdout.buffer.write(orjson.dumps(line) + b"\n")
            sys.stdout.flush()
            await asyncio.sleep(0.5)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    driver = Driver(args)
    app = web.Application()
    app.router.add_post("/v1/messages", driver.on_send)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.api_port).start()
    progress = asyncio.create_task(driver.report_progress()) if args.progress else None
    cpu_start = time.process_time()
    start = time.perf_counter()
    driver.measure_from = start + args.warmup
    driver.measure_until = driver.measure_from + args.duration
    if args.mode == "closed":
        await driver.closed()
    else:
        await driver.open(start)
    elapsed = min(time.perf_counter(), driver.measure_until) - driver.measure_from
    cpu = time.process_time() - cpu_start
    if progress is not None:
        progress.cancel()
    driver.pool.close()
    await runner.cleanup()
    return {
        "mode": args.mode,
        "customers": len(driver.customers),
        "offered_rate": args.rate if args.mode == "open" else None,
        "seconds": round(elapsed, 3),
        "steps": driver.steps,
        "steps_total": driver.steps_total,
        "orders": driver.orders,
        "orders_total": driver.orders_total,
        "steps_per_s": round(driver.steps / elapsed, 1) if elapsed > 0 else 0.0,
        "orders_per_s": round(driver.orders / elapsed, 1) if elapsed > 0 else 0.0,
        "accept_to_reply_ms": summarize_ms(driver.accept_to_reply),
        "post_to_reply_ms": summarize_ms(driver.post_to_reply),
        "webhook_ms": summarize_ms(driver.webhook),
        "rejected": driver.rejected,
        "lost": driver.lost,
        "unexpected_replies": driver.unexpected,
        "driver_cpu_s": round(cpu, 2),
    }


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server-port", type=int, required=True)
    parser.add_argument("--api-port", type=int, required=True)
    parser.add_argument("--token", default="")
    parser.add_argument("--path", default="", help="the webhook's path (default: from --token)")
    parser.add_argument("--dialog", choices=("orderbot", "seed"), default="orderbot")
    parser.add_argument("--mode", choices=("closed", "open"), required=True)
    parser.add_argument("--customers", type=int, default=64)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=1_000_000)
    parser.add_argument("--first-client-id", type=int, default=10**9)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--progress", action="store_true")
    return parser.parse_args(argv)


def main() -> None:
    args = parse(sys.argv[1:])
    try:
        import uvloop  # the driver's loop; orderbot's processes keep their own
    except ImportError:
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    sys.stdout.buffer.write(orjson.dumps({"result": result}) + b"\n")


if __name__ == "__main__":
    main()
