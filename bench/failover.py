"""Failover of a partition's single active consumer: how long a customer whose
partition was held by a worker killed with SIGKILL waits for the answer to a message
sent right after the kill.

Two workers share the partitions; one customer per partition is chosen; one worker is
killed; at once every customer writes, and
the time to each reply is taken at a fake Chat2Desk send API in this process. Customers
of the surviving worker's partitions are answered as usual; those of the killed one's
wait until the roll call drops it (three WORKER_HEARTBEATs) and the survivor takes its
partitions over. Then a new worker is started and the round repeats.

`python -m bench.failover [--rounds 3]`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from bench.bodies import chat2desk_body, webhook_path
from bench.driver import SEND_OK
from bench.harness import RESULTS, WEBHOOK_TOKEN, Stack, free_port, say, spawn
from bench.report import save_json


class Replies:
    """The fake send API: when each client's reply arrived."""

    def __init__(self) -> None:
        self.arrived: dict[int, float] = {}
        self.changed = asyncio.Event()

    async def on_send(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.arrived.setdefault(int(body["client_id"]), time.perf_counter())
        self.changed.set()
        return web.Response(body=SEND_OK, content_type="application/json")


def one_customer_per_partition(stack: Stack, first_id: int) -> dict[int, str]:
    """Client id -> partition, one client for each partition."""
    found: dict[str, int] = {}
    client = first_id
    while len(found) < len(stack.topology.partitions):
        partition = stack.topology.messages_for(f"{stack.settings.tenant}:chat2desk:{client}")
        found.setdefault(partition, client)
        client += 1
    return {c: p for p, c in found.items()}


class Workers:
    """Workers with their ops ports, so the bench can see which partitions each holds."""

    def __init__(self, stack: Stack, log_dir: Path) -> None:
        self.stack = stack
        self.log_dir = log_dir
        self.ports: dict[int, int] = {}  # pid -> ops port

    async def start(self) -> None:
        port = free_port()
        name = f"worker-{len(self.stack.workers) + len(self.stack.retired)}"
        env = {**self.stack.env, "METRICS_PORT": str(port)}
        proc = await spawn(name, ["-m", "worker"], env, self.log_dir, cwd=self.log_dir)
        self.stack.workers.append(proc)
        self.ports[proc.pid] = port

    async def _owned(self, session: aiohttp.ClientSession, port: int) -> int:
        try:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                text = await response.text()
        except aiohttp.ClientError:
            return 0
        return sum(
            1
            for line in text.splitlines()
            if line.startswith("orderbot_partition_owned{") and line.endswith(" 1.0")
        )

    async def wait_shared(self) -> None:
        """Until every live worker holds its share and every partition has one consumer:
        the hand-overs of the last change are over."""
        partitions = self.stack.topology.partitions
        async with aiohttp.ClientSession() as session, asyncio.timeout(60):
            while True:
                owned = [await self._owned(session, self.ports[w.pid]) for w in self.stack.workers]
                if sum(owned) == len(partitions) and all(owned):
                    async with self.stack.amqp() as channel:
                        counts = [
                            (
                                await channel.declare_queue(name, passive=True)
                            ).declaration_result.consumer_count
                            for name in partitions
                        ]
                    if all(count == 1 for count in counts):
                        return
                await asyncio.sleep(0.1)


async def one_round(stack: Stack, replies: Replies, index: int) -> dict[str, Any]:
    customers = one_customer_per_partition(stack, 10**9 + index * 10**6)
    victim = stack.workers[0]
    victim.process.send_signal(signal.SIGKILL)
    await victim.process.wait()
    stack.workers.remove(victim)
    stack.retired.append(victim)
    killed_at = time.perf_counter()
    url = f"http://127.0.0.1:{stack.http_port}{webhook_path(WEBHOOK_TOKEN)}"
    async with aiohttp.ClientSession() as session:
        for client in customers:
            body = chat2desk_body(uuid.uuid4().hex, client, "Здравствуйте")
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}):
                pass
    async with asyncio.timeout(60):
        while not all(c in replies.arrived for c in customers):
            replies.changed.clear()
            await replies.changed.wait()
    waits = sorted(round(replies.arrived[c] - killed_at, 3) for c in customers)
    return {"wait_s": waits, "max_s": waits[-1], "median_s": statistics.median(waits)}


async def main_async(rounds: int) -> dict[str, Any]:
    log_dir = RESULTS / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    replies = Replies()
    app = web.Application()
    app.router.add_post("/v1/messages", replies.on_send)
    runner = web.AppRunner(app)
    await runner.setup()
    api_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", api_port).start()
    results = []
    try:
        async with Stack(log_dir=log_dir, api_port=api_port) as stack:
            workers = Workers(stack, log_dir)
            for _ in range(2):
                await workers.start()
            for index in range(rounds):
                await workers.wait_shared()
                say(f"failover round {index + 1}: SIGKILL one of two workers")
                results.append(await one_round(stack, replies, index))
                await workers.start()  # back to two
            heartbeat = stack.settings.worker_heartbeat.total_seconds()
    finally:
        await runner.cleanup()
    result = {
        "partitions": len(stack.topology.partitions),
        "worker_heartbeat_s": heartbeat,
        "rounds": results,
        "max_s": max(r["max_s"] for r in results),
    }
    save_json("failover", result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    result = asyncio.run(main_async(args.rounds))
    for index, run in enumerate(result["rounds"], start=1):
        slowest, median = run["max_s"], run["median_s"]
        print(f"round {index}: slowest answer {slowest} s after the kill, median {median} s")
    print(f"heartbeat {result['worker_heartbeat_s']} s, {result['partitions']} partitions")


if __name__ == "__main__":
    main()
