"""A PgBouncer of the test's own, in transaction pooling mode, in front of PostgreSQL.

Its own port, configuration and auth file in a temporary directory; stopped by its pid.
PgBouncer refuses to run as root, so when the tests are root it runs as the `postgres`
user (the directory is made readable for it). `SHOW STATS` of its admin console says
how many transactions went through it, so a test can tell its traffic took this path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tests.support.processes import free_port

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


@dataclass(frozen=True)
class PgBouncer:
    port: int
    pid: int
    directory: Path

    def url(self, direct_url: str) -> str:
        """`direct_url` (a database on the PostgreSQL behind it), through this PgBouncer."""
        parts = urlsplit(direct_url)
        user = parts.username or "postgres"
        return urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{self.port}"))

    def transactions(self) -> int:
        """Transactions PgBouncer passed on so far, over every database."""
        out = subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                "pgbouncer",
                "-At",
                "-F",
                "|",
                "-c",
                "SHOW STATS",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return sum(int(line.split("|")[1]) for line in out.splitlines() if "|" in line)


def available() -> bool:
    return Path(PGBOUNCER).is_file()


@contextlib.contextmanager
def running_pgbouncer(postgres_url: str) -> Iterator[PgBouncer]:
    upstream = urlsplit(postgres_url)
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="orderbot-pgbouncer-"))
    directory.chmod(0o755)
    (directory / "userlist.txt").write_text('"postgres" ""\n')
    (directory / "pgbouncer.ini").write_text(
        f"""[databases]
* = host={upstream.hostname or "127.0.0.1"} port={upstream.port or 5432}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory / "userlist.txt"}
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 20
admin_users = postgres
stats_users = postgres
"""
    )
    for name in ("userlist.txt", "pgbouncer.ini"):
        (directory / name).chmod(0o644)
    command = [PGBOUNCER, str(directory / "pgbouncer.ini")]
    if os.geteuid() == 0:
        command[1:1] = ["-u", "postgres"]
    log = (directory / "pgbouncer.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_listening(port, process, directory)
        yield PgBouncer(port=port, pid=process.pid, directory=directory)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)  # PgBouncer's immediate shutdown
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(10)
        log.close()
        shutil.rmtree(directory, ignore_errors=True)


def _wait_listening(port: int, process: subprocess.Popen[bytes], directory: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"pgbouncer exited: {(directory / 'pgbouncer.log').read_text()[-2000:]}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError("pgbouncer did not listen within 15 s")
