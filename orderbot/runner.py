"""Start-up and shutdown common to every process.

The first SIGTERM or SIGINT sets the stop event and the role drains; a second one
means the operator insists, and the process exits at once with status 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from orderbot.logging import configure_logging
from orderbot.settings import ConfigError, Settings, load_settings

Main = Callable[[Settings, asyncio.Event], Coroutine[Any, Any, None]]


def run_role(
    role: str,
    main: Main,
    *,
    required: tuple[tuple[str, ...], ...] = (),
    check: Callable[[Settings], None] | None = None,
) -> int:
    """Run a process role; `required` lists groups of settings, one of which must be set;
    `check` raises ConfigError for a combination of settings the role cannot run with."""
    try:
        settings = load_settings()
        if required:
            settings.require_any(*required)
        if check is not None:
            check(settings)
    except ConfigError as exc:
        print(f"orderbot {role}: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings, role)
    _freeze_startup_objects()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(_run(role, settings, main))


def _freeze_startup_objects() -> None:
    """Keep what importing the code and reading the settings created (about 75,000
    objects: modules, classes, pydantic's validators) out of the cyclic garbage
    collector's full passes.

    Those objects live as long as the process, yet every full collection walked them
    all: 15-50 ms with the event loop stopped, measured in the server under webhook
    load, which at 1,000-1,500 requests a second queued enough requests to set the p99
    (bench/README.md). Frozen, a full pass walks only what the running process made.
    """
    gc.collect()
    gc.freeze()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where it is installed, else asyncio's own (None).

    Measured under the webhook load of bench/ingest.py: -26 % server CPU per request,
    mostly in the transports' reads and writes. The semantics the roles rely on (signal
    handlers, tasks, timeouts) are asyncio's; uvloop is a dependency except on Windows,
    where it does not exist, and a failing import falls back rather than refusing to run.
    """
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _run(role: str, settings: Settings, main: Main) -> int:
    log = structlog.get_logger(role)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second_signal_exit_now", signal=signal.Signals(signum).name)
            os._exit(1)
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    log.info("starting", pid=os.getpid())
    task = asyncio.create_task(main(settings, stop))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not task.done():
        # The role drains within SHUTDOWN_TIMEOUT by itself; this bound only catches a
        # stop stuck on a dependency that hangs, so pm2/systemd never need SIGKILL.
        grace = settings.shutdown_timeout.total_seconds() + 5
        done, _ = await asyncio.wait({task}, timeout=grace)
        if not done:
            log.warning("stop_forced", after_seconds=grace)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    task.result()
    log.info("stopped")
    # Drained: a late signal (say, a supervisor's follow-up SIGTERM) while the runner
    # closes the loop must neither take the "insist" path nor kill the process.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(signum)
        signal.signal(signum, signal.SIG_IGN)
    return 0
