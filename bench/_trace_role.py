"""Run an orderbot role (`python bench/_trace_role.py server|worker`) with a call recorder.

Used by `python -m bench.happy_path`. SIGUSR1 starts recording every entry into a function of
the project's own code (files under server/, worker/, outbox_worker/, orderbot/,
dialog/ of this checkout); SIGUSR2 stops it and writes the events as JSON to
$TRACE_OUT. Nothing is recorded, and nothing slows down, outside that window. The role
itself runs as `python -m ROLE` would run it, so this keeps working when modules move.

An event is [module, function, resumed, task, t_ns, callers]: `resumed` tells a
coroutine or generator resumed after an await/yield from a fresh call; `task` is the
current asyncio task's name, or "ops-probe" for a request served on METRICS_PORT (the
driver's own /metrics polls), or "-" outside any task; `callers` are the project
modules on the call stack below it, outermost first, each run of one module once (for
a fresh call; empty for a resumption).
"""

from __future__ import annotations

import asyncio
import dis
import inspect
import json
import os
import runpy
import signal
import sys
import threading
import time
import weakref
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROJECT_DIRS = ("server", "worker", "outbox_worker", "orderbot", "dialog")
PREFIXES = tuple(f"{ROOT / name}{os.sep}" for name in PROJECT_DIRS)
_GENERATOR = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR
_NOT_OURS = ("", -2)

_codes: dict[CodeType, tuple[str, int]] = {}
_labels: weakref.WeakKeyDictionary[asyncio.Task[Any], str] = weakref.WeakKeyDictionary()
_events: list[tuple[str, str, bool, str, int, tuple[str, ...]]] = []
_STACK_DEPTH = 80
_ops_port = int(os.environ.get("METRICS_PORT") or -1)
_role = ""


def _describe(code: CodeType) -> tuple[str, int]:
    """(module, offset of the first RESUME: -1 for a generator without, -2 not a generator)."""
    if not code.co_filename.startswith(PREFIXES):
        return _NOT_OURS
    parts = list(Path(code.co_filename).relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    first = -2
    if code.co_flags & _GENERATOR:
        first = next((i.offset for i in dis.get_instructions(code) if i.opname == "RESUME"), -1)
    return ".".join(parts), first


def _label(task: asyncio.Task[Any]) -> str:
    """The task's name; "ops-probe" for an aiohttp request task on METRICS_PORT."""
    try:
        frame = getattr(task.get_coro(), "cr_frame", None)
        owner = frame.f_locals.get("self") if frame is not None else None
        transport = getattr(owner, "transport", None)
        sockname = transport.get_extra_info("sockname") if transport is not None else None
        if isinstance(sockname, tuple) and len(sockname) > 1 and sockname[1] == _ops_port:
            return "ops-probe"
    except Exception:  # noqa: S110 (best effort: an unusual task keeps its name)
        pass
    return task.get_name()


def _task() -> str:
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop in this thread
        return "-"
    if task is None:
        return "-"
    label = _labels.get(task)
    if label is None:
        label = _labels[task] = _label(task)
    return label


def _hook(frame: FrameType, event: str, _arg: object) -> None:
    if event != "call":
        return
    code = frame.f_code
    info = _codes.get(code)
    if info is None:
        info = _codes[code] = _describe(code)
    if info is _NOT_OURS:
        return
    module, first = info
    resumed = first != -2 and frame.f_lasti != first
    callers = () if resumed else _callers(frame)
    _events.append((module, code.co_qualname, resumed, _task(), time.perf_counter_ns(), callers))


def _callers(frame: FrameType) -> tuple[str, ...]:
    found: list[str] = []
    below = frame.f_back
    for _ in range(_STACK_DEPTH):
        if below is None:
            break
        code = below.f_code
        info = _codes.get(code)
        if info is None:
            info = _codes[code] = _describe(code)
        if info is not _NOT_OURS and (not found or found[-1] != info[0]):
            found.append(info[0])
        below = below.f_back
    return tuple(reversed(found))


def _start(_signum: int, _frame: FrameType | None) -> None:
    _events.clear()
    threading.setprofile(_hook)
    sys.setprofile(_hook)
    Path(f"{os.environ['TRACE_OUT']}.on").touch()


def _stop(_signum: int, _frame: FrameType | None) -> None:
    sys.setprofile(None)
    threading.setprofile(None)
    out = Path(os.environ["TRACE_OUT"])
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "role": _role, "events": _events}))
    tmp.replace(out)  # the driver sees the whole file or none


def main() -> None:
    global _role
    role = _role = sys.argv[1]
    sys.argv = [role, *sys.argv[2:]]
    sys.path[0] = str(ROOT)  # as `python -m ROLE` from the checkout (not bench/ first)
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
    runpy.run_module(role, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
