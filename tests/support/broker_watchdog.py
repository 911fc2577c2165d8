"""CI's guard against a flaw of the shared RabbitMQ 3.10 broker during a test run.

Its supervisor of at-least-once dead-letter workers (rabbit_fifo_dlx_sup) gives up for
good when a quorum queue is deleted while the queue's dead-letter worker is starting,
which tests that delete their queues at teardown can cause; from then on every new
quorum queue with dead-lettering fails with INTERNAL_ERROR, and so does every later
test. With CI=true (and only then: on a user's machine nothing is ever restarted) a
thread checks every few seconds and restarts just that supervisor, as .ci/services.sh
does before the run, saying so on stderr.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading

CHECK_EVERY = 5.0


def _eval(expression: str) -> str:
    done = subprocess.run(
        ["rabbitmqctl", "-q", "eval", expression],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.stdout.strip()


class BrokerWatchdog:
    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="broker-watchdog", daemon=True)
        self.repairs = 0

    @classmethod
    def for_this_run(cls, amqp_url: str) -> BrokerWatchdog | None:
        """A watchdog in CI against a broker on this host; None anywhere else."""
        local = "@localhost" in amqp_url or "@127.0.0.1" in amqp_url
        if os.environ.get("CI") != "true" or not local or shutil.which("rabbitmqctl") is None:
            return None
        return cls()

    def __enter__(self) -> BrokerWatchdog:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=35)

    def _run(self) -> None:
        while not self._stop.wait(CHECK_EVERY):
            try:
                if _eval("whereis(rabbit_fifo_dlx_sup).") == "undefined":
                    _eval("supervisor:restart_child(rabbit_sup, rabbit_fifo_dlx_sup).")
                    self.repairs += 1
                    print(
                        "\nbroker watchdog (CI): RabbitMQ's dead-letter supervisor was down; "
                        "restarted it",
                        file=sys.stderr,
                        flush=True,
                    )
            except (OSError, subprocess.SubprocessError):
                continue
