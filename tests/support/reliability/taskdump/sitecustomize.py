"""Loaded by the system's processes in reliability tests (it is on their PYTHONPATH).

SIGUSR1 makes a process write every asyncio task with its whole await chain to its log,
one JSON line each, then a `task_dump_end` line: when the books do not balance, this
shows where the work that never finished is waiting.
"""

import asyncio
import json
import signal
import sys
from types import FrameType
from typing import Any


def _chain(task: "asyncio.Task[Any]") -> list[str]:
    frames = []
    awaited: Any = task.get_coro()
    for _ in range(100):  # an await chain is never this deep
        if awaited is None:
            break
        frame = next(
            (
                getattr(awaited, a)
                for a in ("cr_frame", "gi_frame", "ag_frame")
                if getattr(awaited, a, None)
            ),
            None,
        )
        if frame is not None:
            frames.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        following = next(
            (
                getattr(awaited, a)
                for a in ("cr_await", "gi_yieldfrom", "ag_await")
                if getattr(awaited, a, None)
            ),
            None,
        )
        # An async context manager's generator is awaited through an object that does
        # not link back to it; the __aenter__/__aexit__ frame holds it as `self.gen`.
        owner = frame.f_locals.get("self") if frame is not None else None
        if frame is not None and frame.f_code.co_name in ("__aenter__", "__aexit__"):
            following = getattr(owner, "gen", following)
        awaited = following
    return frames


def _dump(_signum: int, _frame: FrameType | None) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    for task in asyncio.all_tasks(loop):
        line = {"event": "task_dump", "task": task.get_name(), "awaits": _chain(task)}
        print(json.dumps(line), file=sys.stderr)
    print(json.dumps({"event": "task_dump_end"}), file=sys.stderr, flush=True)


signal.signal(signal.SIGUSR1, _dump)
