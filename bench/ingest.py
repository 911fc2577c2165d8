"""Ingest: `POST /webhook/chat2desk/{token}` until the broker confirmed the publish.

The same load generator drives four servers in turn on the same machine: a
bare aiohttp handler answering 200, a bare handler doing one confirmed
persistent publish, orderbot's server, and a second orderbot server whose broker
is unreachable (every webhook goes to its edge spool, on disk). Our figure is
reported as a ratio to each baseline: the first says what the HTTP stack costs,
the second what our code adds on top of the one durable write a 2xx needs; the
spooling row says what the edge takes in while the broker is down.

`python -m bench.ingest [--quick]` runs it alone; `bench.all` runs everything.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from pathlib import Path
from typing import Any

from bench.bodies import webhook_path
from bench.harness import (
    RESULTS,
    WEBHOOK_TOKEN,
    Meter,
    Proc,
    Stack,
    free_port,
    run_json,
    say,
    spawn,
    uses_uvloop,
    wait_http,
)
from bench.plan import FULL, QUICK, Plan


class Target:
    """A server under load: its port, its process, and how to empty what it queued."""

    def __init__(
        self, name: str, port: int, proc: Proc, stack: Stack, queue: tuple[str, ...]
    ) -> None:
        self.name = name
        self.port = port
        self.proc = proc
        self.stack = stack
        self.queue = queue

    async def purge(self) -> None:
        """Empty the queue between runs: a queue grown by earlier runs slows the broker
        and, past MESSAGES_MAX_LENGTH, would turn our 200s into 503s."""
        if not self.queue:  # the spooling server's broker is unreachable: nothing queued
            return
        async with self.stack.amqp() as channel:
            for name in self.queue:
                queue = await channel.declare_queue(name, passive=True)
                await queue.purge()


async def drive(target: Target, plan: Plan, log_dir: Path, *, rate: int | None) -> dict[str, Any]:
    args = [
        "-m",
        "bench.loadgen",
        "--port",
        str(target.port),
        "--path",
        webhook_path(WEBHOOK_TOKEN),
        "--run-id",
        f"{target.name}-{uuid.uuid4().hex[:8]}",
        "--warmup",
        str(plan.warmup),
    ]
    if rate is None:
        args += ["--mode", "closed", "--concurrency", str(plan.concurrency)]
        args += ["--duration", str(plan.closed_seconds)]
        seconds = plan.closed_seconds
    else:
        args += ["--mode", "open", "--rate", str(rate), "--duration", str(plan.open_seconds)]
        args += ["--timeline", str(log_dir / f"timeline-{target.name}-{rate}.txt")]
        seconds = plan.open_seconds
    say(f"ingest {target.name} " + ("closed loop" if rate is None else f"open loop {rate}/s"))
    meter = Meter([target.proc])
    result = await run_json("loadgen", args, log_dir, within=seconds + plan.warmup + 30)
    result.update(meter.read())
    result["target"] = target.name
    # CPU per request of the server under test: steadier than req/s on a shared machine,
    # since time lost waiting for a core does not count in it.
    cores = float(result["cores_used"].get(target.proc.name, 0.0))
    result["cpu_us_per_request"] = round(cores / result["rps"] * 1e6) if result["rps"] else None
    await target.purge()
    return result


async def run_ingest(stack: Stack, plan: Plan, log_dir: Path) -> dict[str, Any]:
    uvloop_flag = ["--uvloop"] if uses_uvloop() else []
    bare_queue = stack.settings.queue("bare-publish")
    targets: list[Target] = []
    started: list[Proc] = []
    try:
        for kind in ("http", "publish"):
            port = free_port()
            command = ["-m", "bench.baselines", kind, "--port", str(port), "--queue", bare_queue]
            command += ["--max-length", "1000000", "--amqp-url", stack.settings.amqp_url]
            proc = await spawn(f"bare-{kind}", [*command, *uvloop_flag], {}, log_dir)
            started.append(proc)
            await wait_http(port)
            queue = (bare_queue,) if kind == "publish" else stack.topology.partitions
            targets.append(Target(f"bare-{kind}", port, proc, stack, queue))
        assert stack.server is not None
        targets.append(
            Target("orderbot", stack.http_port, stack.server, stack, stack.topology.partitions)
        )
        spooling_port = free_port()
        spooling = await spawn(
            "orderbot-spooling",
            ["-m", "server"],
            {
                **stack.env,
                "HTTP_PORT": str(spooling_port),
                "AMQP_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/",  # nobody there
                "SPOOL_DIR": str(log_dir / f"{stack.namespace}-spooling"),
            },
            log_dir,
            cwd=log_dir,
        )
        started.append(spooling)
        await wait_http(spooling_port)
        spooling_target = Target("orderbot-spooling", spooling_port, spooling, stack, ())

        closed: dict[str, list[dict[str, Any]]] = {t.name: [] for t in (*targets, spooling_target)}
        for _ in range(plan.rounds):
            for target in (*targets, spooling_target):
                closed[target.name].append(await drive(target, plan, log_dir, rate=None))
        best = {name: max(runs, key=lambda r: float(r["rps"])) for name, runs in closed.items()}

        open_runs: list[dict[str, Any]] = []
        for target in targets:
            ceiling = float(best[target.name]["rps"])
            for rate in plan.rates:
                if rate > 1.25 * ceiling and rate > 1000:
                    continue  # past saturation the run only measures the queue growing
                open_runs.append(await drive(target, plan, log_dir, rate=rate))
        for proc in started:
            await proc.stop()
    finally:
        for proc in started:
            if proc.running:
                proc.process.kill()
                await proc.process.wait()
        async with stack.amqp() as channel:
            await channel.queue_delete(bare_queue)

    ours = float(best["orderbot"]["rps"])

    def ratio(name: str) -> float:
        ceiling = float(best[name]["rps"])
        return round(ours / ceiling, 3) if ceiling else 0.0

    return {
        "event_loop": "uvloop" if uvloop_flag else "asyncio",
        "closed": closed,
        "best": best,
        "open": open_runs,
        "ratio_to_bare_http": ratio("bare-http"),
        "ratio_to_bare_publish": ratio("bare-publish"),
        "spooling_rps": float(best["orderbot-spooling"]["rps"]),
        "spooling_ratio_to_bare_publish": round(
            float(best["orderbot-spooling"]["rps"]) / float(best["bare-publish"]["rps"] or 1), 3
        ),
        "peak_rss_mb": {p.name: round(p.peak_rss_mb, 1) for p in started},
    }


async def main_async(plan: Plan) -> dict[str, Any]:
    from bench.report import save_json

    log_dir = RESULTS / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    async with Stack(log_dir=log_dir, api_port=free_port()) as stack:
        result = await run_ingest(stack, plan, log_dir)
    save_json("ingest", result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(main_async(QUICK if args.quick else FULL))
    for name, run in result["best"].items():
        print(f"{name:14} {run['rps']:>8} req/s  p99 {run['latency_ms']['p99']} ms")
    print(f"ratio to bare publish: {result['ratio_to_bare_publish']}")


if __name__ == "__main__":
    main()
