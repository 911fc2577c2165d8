"""Loaded by a process under `python -m bench.leakcheck` (this folder is put first on
its PYTHONPATH): traces allocations from the start, and on SIGUSR2 writes what grew
since the previous SIGUSR2, by allocating line, to $BENCH_TRACEMALLOC_OUT.

RSS says that a process grows; only the allocator's own trace says which line keeps
what. Tracing slows the process several times, so figures from such a run are
never reported as performance.
"""

from __future__ import annotations

import os
import signal
import tracemalloc
from types import FrameType

_previous: list[tracemalloc.Snapshot] = []


def _dump(_signum: int, _frame: FrameType | None) -> None:
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)]
    )
    out = os.environ.get("BENCH_TRACEMALLOC_OUT", f"tracemalloc-{os.getpid()}.txt")
    with open(out, "a") as file:
        current, peak = tracemalloc.get_traced_memory()
        file.write(f"=== snapshot pid {os.getpid()}: traced {current} B, peak {peak} B\n")
        if _previous:
            for stat in snapshot.compare_to(_previous[-1], "lineno")[:20]:
                file.write(
                    f"{stat.size_diff:+d} B {stat.count_diff:+d} blocks at {stat.traceback}\n"
                )
            file.write("--- the largest growths with their callers\n")
            for stat in snapshot.compare_to(_previous[-1], "traceback")[:4]:
                file.write(f"{stat.size_diff:+d} B {stat.count_diff:+d} blocks\n")
                for line in stat.traceback.format()[-12:]:
                    file.write(f"    {line}\n")
        file.write("=== end\n")
    _previous[:] = [snapshot]


if os.environ.get("BENCH_TRACEMALLOC"):
    tracemalloc.start(12)
    signal.signal(signal.SIGUSR2, _dump)
