"""`make bench` / `make bench-quick`: every benchmark in one run, one stack.

One server (and its throwaway database and namespace) serves the ingest runs,
then the pipeline runs with 1 and 2 workers, then the memory soak, so start-up
is paid once and the baselines are measured minutes, not hours, from our figures.
The full run rewrites the results block of bench/README.md and bench/latency.png;
the quick run only checks that everything works and prints its table. Both save
raw JSON under bench/results/.

Exit status 1 means the pipeline misbehaved (a reply lost, orders miscounted,
messages left behind), never that a target was missed: targets are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from bench.harness import BENCH, RESULTS, Stack, free_port
from bench.history_cost import run_history_cost
from bench.history_cost import summary as history_summary
from bench.ingest import run_ingest
from bench.memory import run_soak
from bench.peer import CUSTOMERS, seed_beside
from bench.pipeline import run_pipeline
from bench.plan import FULL, QUICK, Plan
from bench.plot import plot_latency
from bench.report import machine, save_json

START = "<!-- results:start -->"
END = "<!-- results:end -->"
RSS_LIMIT_MB = 150.0


async def run_all(plan: Plan) -> dict[str, Any]:
    """Every phase on one stack; what is done so far is saved after each phase, so a
    run cut short still leaves its figures in bench/results/."""
    log_dir = RESULTS / "logs"
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True)
    started = time.monotonic()
    partial = f"{'quick' if plan.quick else 'full'}-partial"
    results: dict[str, Any] = {"machine": machine(), "quick": plan.quick}
    async with Stack(log_dir=log_dir, api_port=free_port()) as stack:
        results["settings"] = {k: v for k, v in stack.env.items() if "TOKEN" not in k}
        results["ingest"] = await run_ingest(stack, plan, log_dir)
        save_json(partial, results)
        await stack.purge_messages()
        results["pipeline"] = await run_pipeline(stack, plan, log_dir)
        save_json(partial, results)
        results["history_cost"] = await run_history_cost(stack, plan, log_dir)
        save_json(partial, results)
        results["memory"] = await run_soak(stack, plan, log_dir)
        results["orders_in_db"] = await stack.count_orders()
    # After our stack is gone, so the seed has the services to itself as we had.
    seed = await seed_beside(
        log_dir, ingest_seconds=plan.closed_seconds, pipeline_seconds=plan.pipeline_seconds
    )
    if seed is not None:
        results["seed"] = seed
    procs = [p for p in [stack.server, *stack.retired] if p is not None]
    results["peak_rss_mb"] = {p.name: round(p.peak_rss_mb, 1) for p in procs}
    results["server_exit_code"] = stack.server.process.returncode if stack.server else None
    results["seconds"] = round(time.monotonic() - started, 1)
    return results


def problems(results: dict[str, Any]) -> list[str]:
    """What would make this run's figures meaningless: lost work or a wrong count."""
    found = []
    runs = [r for w in results["pipeline"]["workers"].values() for r in [w["closed"], *w["open"]]]
    runs += [r for mode in results.get("history_cost", {}).get("runs", {}).values() for r in mode]
    orders = sum(int(r["orders_total"]) for r in runs)
    orders += int(results["memory"]["orders"])
    lost = sum(int(r["lost"]) for r in runs) + int(results["memory"]["lost"])
    if lost:
        found.append(f"{lost} replies never arrived")
    if results["orders_in_db"] != orders:
        found.append(f"{results['orders_in_db']} orders in the database, {orders} expected")
    for where in [*(w["queues_after"] for w in results["pipeline"]["workers"].values())]:
        if where.get("dlq") or where.get("outbox"):
            found.append(f"messages left in outbox/dlq: {where}")
    exits = {"server": results["server_exit_code"], **results["memory"]["exit_codes"]}
    for run in results["pipeline"]["workers"].values():
        exits.update(run["exit_codes"])
    found += [f"{name} exited {code} on SIGTERM" for name, code in exits.items() if code != 0]
    return found


def _cpu_per_request(run: dict[str, Any], name: str) -> str:
    """Server CPU per request; derived from the cores used where an older run lacks it."""
    if run.get("cpu_us_per_request") is not None:
        return str(run["cpu_us_per_request"])
    cores = run["cores_used"].get(name, run["cores_used"].get("server", 0.0))
    return f"{cores / run['rps'] * 1e6:.0f}" if run["rps"] else "—"


def _cpu_per_step(run: dict[str, Any]) -> str:
    per_step = run.get("cpu_us_per_step")
    if per_step:
        return f"{per_step['server']} / {per_step['workers']}"
    cores, rate = run["cores_used"], float(run["steps_per_s"])
    if not rate:
        return "—"
    workers = sum(float(v) for k, v in cores.items() if k.startswith("worker"))
    return f"{cores.get('server', 0.0) / rate * 1e6:.0f} / {workers / rate * 1e6:.0f}"


def _ms(run: dict[str, Any], key: str = "latency_ms") -> str:
    lat = run[key]
    return f"{lat['p50']:.1f} / {lat['p99']:.1f} / {lat['p999']:.1f}"


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    ingest = results["ingest"]
    ours = ingest["best"]["orderbot"]
    at_1000 = [r for r in ingest["open"] if r["target"] == "orderbot" and r["offered_rate"] == 1000]
    one = results["pipeline"]["workers"].get("1", {})
    at_200 = [r for r in one.get("open", []) if r["offered_rate"] == 200]
    peak = max(results["peak_rss_mb"].values())
    slopes = results["memory"]["slope_mb_per_100k"]
    rows = [
        (
            "ingest ≥ 0.8 × bare confirmed publish",
            f"{ingest['ratio_to_bare_publish']:.2f}",
            ingest["ratio_to_bare_publish"] >= 0.8,
        ),
        ("ingest ≥ 2,500 req/s", f"{ours['rps']:.0f} req/s", ours["rps"] >= 2500),
    ]
    if at_1000:
        p99 = at_1000[0]["latency_ms"]["p99"]
        rows.append(("ingest p99 < 15 ms at 1,000 req/s", f"{p99:.1f} ms", p99 < 15))
    else:
        rows.append(("ingest p99 < 15 ms at 1,000 req/s", "not reachable", False))
    if one:
        steps = one["closed"]["steps_per_s"]
        rows.append(("pipeline ≥ 1,000 steps/s, 1 worker", f"{steps:.0f} steps/s", steps >= 1000))
        ratio = one["ratio_to_bare_consume"]
        rows.append(("pipeline ≥ 0.3 × bare consume+ack", f"{ratio:.2f}", ratio >= 0.3))
    if at_200:
        p99 = at_200[0]["accept_to_reply_ms"]["p99"]
        rows.append(("pipeline p99 < 50 ms at 200 steps/s", f"{p99:.1f} ms", p99 < 50))
    rows.append(("no process over 150 MB RSS", f"max {peak:.0f} MB", peak <= RSS_LIMIT_MB))
    worst = max(abs(v) for v in slopes.values()) if slopes else 0.0
    messages = results["memory"]["messages"]
    rows.append(
        (
            "no RSS growth over 100k messages",
            f"≤ {worst:.1f} MB/100k over {messages:,} msgs",
            worst < 2.0 and messages >= 100_000,
        )
    )
    return rows


def table(results: dict[str, Any]) -> str:
    ingest = results["ingest"]
    pipeline = results["pipeline"]
    memory = results["memory"]
    m = results["machine"]
    out = [
        f"Run of {m['date']} on {m['cores']} cores ({m['cpu']}), {m['memory_gb']} GB, "
        f"Linux {m['kernel']}, Python {m['python']}, event loop of the processes under "
        f"test: {ingest['event_loop']}; {'QUICK run' if results['quick'] else 'full run'} "
        f"in {results['seconds']:.0f} s.",
        "",
        "**Targets**",
        "",
        "| target | reached | |",
        "| --- | --- | --- |",
    ]
    out += [
        f"| {name} | {value} | {'✅' if ok else '❌'} |" for name, value, ok in targets(results)
    ]
    out += [
        "",
        f"**Ingest**, closed loop, {ingest['best']['orderbot']['concurrency']} connections "
        "(best of the rounds; latency p50 / p99 / p99.9 in ms; cores: the process under test / "
        "rabbitmq / redis; machine: share of both cores busy)",
        "",
        "| server | req/s | latency | CPU µs/request | cores | machine | orderbot as a ratio |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    spooling = "orderbot-spooling" if "orderbot-spooling" in ingest["best"] else None
    for name in ("bare-http", "bare-publish", "orderbot", *([spooling] if spooling else [])):
        run = ingest["best"][name]
        cores = run["cores_used"]
        used = f"{cores.get(name, cores.get('server', 0)):.2f} / {cores['rabbitmq']:.2f} / "
        used += f"{cores['redis']:.2f}"
        ratio = {
            "bare-http": f"{ingest['ratio_to_bare_http']:.2f}",
            "bare-publish": f"**{ingest['ratio_to_bare_publish']:.2f}**",
            "orderbot": "1",
            "orderbot-spooling": "broker down: every 2xx from the edge spool",
        }[name]
        out.append(
            f"| {name} | {run['rps']:.0f} | {_ms(run)} | {_cpu_per_request(run, name)} | {used} "
            f"| {run['machine_busy']:.2f} | {ratio} |"
        )
    seed = results.get("seed")
    if seed is not None:
        run = seed["ingest"]
        cores = run["cores_used"]
        ours = float(ingest["best"]["orderbot"]["rps"])
        out.append(
            f"| the seed (Bun {seed['bun']}) | {run['rps']:.0f} | {_ms(run)} | "
            f"{run['server_cpu_us_per_webhook']} | {cores.get('seed-server', 0):.2f} / "
            f"{cores['rabbitmq']:.2f} / {cores['redis']:.2f} | {run['machine_busy']:.2f} | "
            f"**{ours / float(run['rps'] or 1):.2f}** |"
        )
    out += [
        "",
        "**Ingest**, open loop (latency from when each request was due, p50 / p99 / p99.9 ms; "
        "rates above 1,000 and past 1.25 × a server's closed-loop best are skipped)",
        "",
        "| offered req/s | bare-http | bare-publish | orderbot |",
        "| --- | --- | --- | --- |",
    ]
    rates = sorted({int(r["offered_rate"]) for r in ingest["open"]})
    for rate in rates:
        cells = []
        for name in ("bare-http", "bare-publish", "orderbot"):
            found = [r for r in ingest["open"] if r["target"] == name and r["offered_rate"] == rate]
            cells.append(_ms(found[0]) if found else "—")
        out.append(f"| {rate} | {' | '.join(cells)} |")
    ceiling = pipeline["bare_consume"]
    out += [
        "",
        f"**Pipeline**, closed loop ({results['pipeline']['workers']['1']['closed']['customers']} "
        f"customers), prefetch {pipeline['prefetch']} per worker; bare consume+ack ceiling: "
        f"**{ceiling['rate']:.0f} msg/s** (quorum queue, same prefetch). Latency: webhook 200 → "
        "reply at the fake Chat2Desk, p50 / p99 / p99.9 ms.",
        "",
        "| workers | steps/s | orders/s | latency | ratio to consume+ack | CPU µs/step: server / "
        "workers | cores: server / workers / rabbitmq / redis / postgresql / driver | machine |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for workers, run in pipeline["workers"].items():
        closed = run["closed"]
        cores = closed["cores_used"]
        worker_cores = sum(v for k, v in cores.items() if k.startswith("worker"))
        driver = closed["driver_cpu_s"] / max(closed["seconds"], 0.001)
        used = (
            f"{cores.get('server', 0):.2f} / {worker_cores:.2f} / {cores['rabbitmq']:.2f} / "
            f"{cores['redis']:.2f} / {cores['postgresql']:.2f} / {driver:.2f}"
        )
        cpu = _cpu_per_step(closed)
        out.append(
            f"| {workers} | {closed['steps_per_s']:.0f} | {closed['orders_per_s']:.0f} | "
            f"{_ms(closed, 'accept_to_reply_ms')} | **{run['ratio_to_bare_consume']:.2f}** | "
            f"{cpu} | {used} | {closed['machine_busy']:.2f} |"
        )
    if seed is not None:
        run = seed["pipeline"]
        cores = run["cores_used"]
        per_step = run.get("cpu_us_per_step", {})
        ours = float(pipeline["workers"]["1"]["closed"]["steps_per_s"])
        out.append(
            f"| the seed, 1 worker ({CUSTOMERS} customers) | {run['steps_per_s']:.0f} | "
            f"{run['orders_per_s']:.0f} | {_ms(run, 'accept_to_reply_ms')} | orderbot with 1 "
            f"worker ÷ the seed: **{ours / float(run['steps_per_s'] or 1):.2f}** | "
            f"{per_step.get('server', '—')} / {per_step.get('worker', '—')} | "
            f"{cores.get('seed-server', 0):.2f} / {cores.get('seed-worker', 0):.2f} / "
            f"{cores['rabbitmq']:.2f} / {cores['redis']:.2f} / {cores['postgresql']:.2f} / — | "
            f"{run['machine_busy']:.2f} |"
        )
    out += [
        "",
        "**Pipeline**, open loop (steps due at a fixed rate, each taken by an idle customer)",
        "",
        "| offered steps/s | workers | done steps/s | latency | webhook p99 ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for workers, run in pipeline["workers"].items():
        for open_run in run["open"]:
            out.append(
                f"| {open_run['offered_rate']:.0f} | {workers} | {open_run['steps_per_s']:.0f} | "
                f"{_ms(open_run, 'accept_to_reply_ms')} | {open_run['webhook_ms']['p99']:.1f} |"
            )
    if "history_cost" in results:
        out += [
            "",
            "**Conversation history**, the closed loop with one worker, `HISTORY_ENABLED` off "
            "and on alternately (best of each):",
            "",
            *(f"- {line}" for line in history_summary(results["history_cost"])),
        ]
    slopes = memory["slope_mb_per_100k"]
    out += [
        "",
        f"**Memory**: peak RSS (MB) of every process in the run; soak of "
        f"{memory['messages']:,} messages through the server and one worker at "
        f"{memory['steps_per_s']:.0f} steps/s; slope of RSS over the second half, MB per 100k "
        "messages.",
        "",
        "| process | peak RSS MB | RSS at soak start → end MB | slope MB/100k |",
        "| --- | --- | --- | --- |",
    ]
    peaks = {**results["peak_rss_mb"], **ingest.get("peak_rss_mb", {})}
    for name, peak in peaks.items():
        start = memory["rss_start_mb"].get(name)
        end = memory["rss_end_mb"].get(name)
        span = f"{start:.1f} → {end:.1f}" if start is not None and end is not None else "—"
        slope_text = f"{slopes[name]:+.2f}" if name in slopes else "—"
        out.append(f"| {name} | {peak:.1f} | {span} | {slope_text} |")
    return "\n".join(out)


def update_readme(text: str) -> None:
    readme = BENCH / "README.md"
    current = readme.read_text()
    if START not in current or END not in current:
        raise SystemExit(f"{readme} lacks the {START} / {END} markers")
    head, rest = current.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{text}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="under a minute; checks, no figures")
    parser.add_argument(
        "--from-json",
        type=Path,
        help="run nothing: rewrite README's results and latency.png from a saved full run",
    )
    args = parser.parse_args()
    if args.from_json is not None:
        saved: dict[str, Any] = orjson.loads(args.from_json.read_bytes())
        plot_latency(saved, BENCH / "latency.png")
        update_readme(table(saved))
        print(table(saved))
        return
    plan = QUICK if args.quick else FULL
    results = asyncio.run(run_all(plan))
    name = "quick" if plan.quick else "full"
    save_json(f"{name}-{time.strftime('%Y%m%dT%H%M%S')}", results)
    save_json(name, results)
    text = table(results)
    plot_latency(results, RESULTS / f"latency-{name}.png")
    if not plan.quick:
        shutil.copy(RESULTS / f"latency-{name}.png", BENCH / "latency.png")
        update_readme(text)
    print(text)
    found = problems(results)
    for problem in found:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
