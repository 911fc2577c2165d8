"""Start-up and shutdown of every role's process: `main("server")` and so on.

From the first line, SIGTERM means what Ctrl-C means: until the role's event loop takes
the signal over, its default action would kill the process, and pm2, systemd or a test
stopping it during start-up (a second or more of imports and settings) would see a death
by signal instead of exit 0; nothing is in flight yet. This module is imported before
anything heavy for that reason, and imports the rest only once the handler is set.

Once running, the first SIGTERM or SIGINT sets the stop event and the role drains; a
second one means the operator insists, and the process exits at once with status 1.
"""

from __future__ import annotations

import signal
import sys
from typing import TYPE_CHECKING, Any

from orderbot.runtime.roles import Role, role_named

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Coroutine

    from orderbot.config.settings import Settings

    Entry = Callable[[Settings, asyncio.Event], Coroutine[Any, Any, None]]


def main(role_name: str) -> int:
    """Run the role in this process; the exit status. Stopped during start-up: 0."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return _start(role_named(role_name))
    except KeyboardInterrupt:  # interrupted before start-up finished: nothing was in flight
        return 0


def _start(role: Role) -> int:
    import asyncio

    from orderbot.config.settings import ConfigError, load_settings, refuse_example_secrets
    from orderbot.runtime.logging import configure_logging

    entry: Entry = _resolve(role.entry)
    try:
        settings = load_settings()
        settings.require_any(*role.required)
        refuse_example_secrets(settings)
        if role.check is not None:
            _resolve(role.check)(settings)
    except ConfigError as exc:
        print(f"orderbot {role.command}: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings, role.name, cache_loggers=True)
    _freeze_startup_objects()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        try:
            return runner.run(_run(role, settings, entry))
        except ConfigError as exc:  # found while starting, e.g. a port that is taken
            print(f"orderbot {role.command}: {exc}", file=sys.stderr)
            return 2


def _resolve(reference: str) -> Any:
    """The object a "module:name" reference of the role table names, imported now."""
    import importlib

    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def _freeze_startup_objects() -> None:
    """Keep what importing the code and reading the settings created (tens of thousands
    of objects: modules, classes, pydantic's validators) out of the cyclic garbage
    collector's full passes.

    Those objects live as long as the process, yet every full collection walked them
    all, with the event loop stopped; under webhook load that queued enough requests to
    set the p99 (bench/README.md). Frozen, a full pass walks only what the running
    process made.
    """
    import gc

    gc.collect()
    gc.freeze()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where it is installed, else asyncio's own (None).

    The semantics the roles rely on (signal handlers, tasks, timeouts) are asyncio's;
    uvloop is a dependency except on Windows, where it does not exist, and a failing
    import falls back rather than refusing to run. Its gain is in bench/README.md.
    """
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _run(role: Role, settings: Settings, entry: Entry) -> int:
    import asyncio
    import contextlib
    import os

    import structlog

    log = structlog.get_logger(role.name)
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
    task = asyncio.create_task(entry(settings, stop))
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
