"""Where the time goes: py-spy samples of the real server and worker under load.

`python -m bench.profile [--seconds N]` starts the stack, drives the ingest
(closed loop, no worker) while py-spy records the server, then whole dialogs
while it records the server and one worker. Stacks are saved in py-spy's raw
(collapsed) format under bench/results/profile/ (open them with speedscope or
flamegraph.pl) and summarized: the functions where samples end (own time) and
the calls that are on the stack (inclusive time), in percent of the samples.
py-spy pauses the process for each sample (100 a second): stacks read from a
running process come out torn. Not part of `make bench`: the pauses cost the
process a little, so profiled runs are never the ones whose figures are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson

from bench.bodies import webhook_path
from bench.harness import REPO, RESULTS, WEBHOOK_TOKEN, Proc, Stack, free_port, run_json
from bench.pipeline import DriverRuns

OUT = RESULTS / "profile"
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: pip install py-spy")
    return found


async def record(proc: Proc, seconds: float, name: str) -> Path:
    """Start py-spy on `proc`; returns the path its samples go to."""
    path = OUT / f"{name}.txt"
    recorder = await asyncio.create_subprocess_exec(
        _py_spy(), "record", "--pid", str(proc.pid), "--duration", str(int(seconds)),
        "--rate", "100", "--format", "raw", "--output", str(path),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    _RECORDERS.append(recorder)
    return path


_RECORDERS: list[asyncio.subprocess.Process] = []


async def recorders_done() -> None:
    async with asyncio.timeout(60):
        for recorder in _RECORDERS:
            await recorder.wait()
    _RECORDERS.clear()


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    file = match["file"]
    # This checkout's own files are named from its root, wherever it is.
    for marker in ("site-packages/", f"{REPO}/", "/work/main/", "lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{match['func']} ({file})"


# Samples that are waits, not work: epoll, an idle thread-pool thread, and (under
# uvloop, whose loop is C) the loop's own frame, where its epoll wait shows.
IDLE_LEAVES = (
    "EpollSelector.select",
    "_worker (concurrent/futures/thread.py",
    "Runner.run (asyncio/runners.py",
)


def _aiosqlite_wait() -> str:
    """The raw frame of aiosqlite's worker thread waiting for its next call (the spool's
    connection, idle while the broker confirms). py-spy counts that wait, a blocking
    queue get in C, as busy at times; the same function running a statement is work."""
    import inspect

    import aiosqlite.core

    lines, first = inspect.getsourcelines(aiosqlite.core._connection_worker_thread)
    waits = [first + i for i, text in enumerate(lines) if "tx.get()" in text]
    return f"_connection_worker_thread (aiosqlite/core.py:{waits[0]})" if waits else "\0"


# A sample whose last Python frame is one of these is in the kernel's send(): asyncio's
# transport is Python; uvloop's is C, so the stream writer calling it is the leaf.
_SEND_LEAVES = (
    "_SelectorSocketTransport.write",
    "StreamWriter.write (",
    "StreamWriter.writelines (",
    "StreamWriter._writelines (",
)
_LOOP_FILES = (
    "(asyncio/",
    "(selectors.py",
    "(socket.py",
    "(threading.py",
    "(<frozen",
    "(contextlib.py",
)
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("redis client", ("(redis/",)),
    ("aio-pika/aiormq/pamqp", ("(aio_pika/", "(aiormq/", "(pamqp/")),
    ("aiohttp", ("(aiohttp/",)),
    ("asyncpg", ("(asyncpg/",)),
    ("pydantic", ("(pydantic",)),
    ("structlog", ("(structlog/",)),
    ("prometheus_client", ("(prometheus_client/",)),
    ("tenacity", ("(tenacity/",)),
    ("orderbot code", ("(orderbot/", "(server/", "(worker/", "(outbox_worker/", "(dialog/")),
    ("bench code", ("(bench/",)),  # the bare worker of bench/bare_step.py
)


def component(frames: list[str]) -> str:
    """Whose work a sample is: the nearest frame, from the leaf up, outside the event
    loop's own modules (a socket write is charged to the client that wrote)."""
    for frame in reversed(frames):
        if any(marker in frame for marker in _LOOP_FILES):
            continue
        for name, markers in COMPONENTS:
            if any(
                marker in frame
                for marker in (markers if isinstance(markers, tuple) else (markers,))
            ):
                return name
        return "other"
    return "event loop"


def summarize(path: Path, top: int = 25) -> dict[str, Any]:
    """Own and inclusive time per function and time per component, as percentages of
    the busy samples (idle waits in epoll or the thread pool are left out)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    components: collections.Counter[str] = collections.Counter()
    writes: collections.Counter[str] = collections.Counter()
    total = idle = 0
    sqlite_wait = _aiosqlite_wait()
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        raw = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        frames = [_short(f) for f in raw]
        if not frames:
            continue
        if frames[-1].startswith(IDLE_LEAVES) or raw[-1].endswith(sqlite_wait):
            idle += count
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
        components[component(frames)] += count
        if frames[-1].startswith(_SEND_LEAVES):
            writes[component(frames)] += count

    def table(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(f, round(100 * c / max(total, 1), 1)) for f, c in counter.most_common(top)]

    return {
        "samples": total,
        "idle_samples": idle,
        "components": table(components),
        "socket_writes_by_component": table(writes),
        "own": table(own),
        "inclusive": table(inclusive),
    }


async def main_async(seconds: float) -> dict[str, Any]:
    OUT.mkdir(parents=True, exist_ok=True)
    log_dir = RESULTS / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    summaries: dict[str, Any] = {}
    async with Stack(log_dir=log_dir, api_port=free_port()) as stack:
        assert stack.server is not None
        ingest = await record(stack.server, seconds, "server-ingest")
        args = ["-m", "bench.loadgen", "--port", str(stack.http_port), "--mode", "closed"]
        args += ["--path", webhook_path(WEBHOOK_TOKEN), "--concurrency", "32"]
        args += ["--duration", str(seconds), "--run-id", uuid.uuid4().hex[:8], "--warmup", "0"]
        load = await run_json("loadgen", args, log_dir, within=seconds + 60)
        await recorders_done()
        await stack.purge_messages()
        summaries["server-ingest"] = {"load": load["rps"], **summarize(ingest)}

        await stack.start_workers(1)
        paths = {
            "server-pipeline": await record(stack.server, seconds, "server-pipeline"),
            "worker-pipeline": await record(stack.workers[0], seconds, "worker-pipeline"),
        }
        dialog = await DriverRuns(stack, log_dir).run(
            mode="closed", seconds=seconds, warmup=0, customers=64
        )
        await recorders_done()
        for name, path in paths.items():
            summaries[name] = {"load": dialog["steps_per_s"], **summarize(path)}
    (OUT / "summary.json").write_bytes(orjson.dumps(summaries, option=orjson.OPT_INDENT_2))
    return summaries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    summaries = asyncio.run(main_async(args.seconds))
    for name, summary in summaries.items():
        print(f"\n=== {name}: {summary['samples']} busy samples at {summary['load']}/s")
        for kind in ("components", "socket_writes_by_component", "own", "inclusive"):
            print(f"--- {kind}")
            for frame, pct in summary[kind]:
                print(f"{pct:6.1f}%  {frame}")


if __name__ == "__main__":
    main()
