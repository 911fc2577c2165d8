"""Each worker role has its ops port (/metrics, /health) of its own, bound to METRICS_HOST,
and a port that is taken stops the process with one line naming the setting."""

from __future__ import annotations

import socket
from pathlib import Path

from aio_pika.abc import AbstractChannel

from orderbot.config.settings import Settings
from orderbot.runtime.roles import OUTBOX_WORKER, WORKER
from tests.support.processes import OrderbotProcess, free_port, wait_http_ok


def test_the_roles_default_to_ports_of_their_own_away_from_node_exporter() -> None:
    settings = Settings(_env_file=None)
    ports = {getattr(settings, str(role.metrics_port_setting)) for role in (WORKER, OUTBOX_WORKER)}

    assert len(ports) == 2
    assert 9100 not in ports


async def test_a_worker_serves_its_ops_port_on_the_metrics_host(
    config: dict[str, str], amqp: AbstractChannel, tmp_path: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in config.items() if k != "METRICS_PORT"}
    env.update(WORKER_METRICS_PORT=str(port), METRICS_HOST="127.0.0.1")
    worker = await OrderbotProcess("worker", env, tmp_path / "worker.log", tmp_path).start()
    try:
        await wait_http_ok(f"http://127.0.0.1:{port}/health")
    finally:
        await worker.stop()


async def test_a_taken_port_is_one_line_naming_its_setting(
    config: dict[str, str], amqp: AbstractChannel, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in config.items() if k != "METRICS_PORT"}
        env.update(WORKER_METRICS_PORT=str(port), LOG_LEVEL="warning")
        log = tmp_path / "worker.log"
        worker = await OrderbotProcess("worker", env, log, tmp_path).start()
        status = await worker.wait(timeout=60)

    errors = [line for line in log.read_text().splitlines() if "WORKER_METRICS_PORT" in line]
    assert status == 2
    assert errors == [
        f"orderbot worker: cannot listen on 127.0.0.1:{port} (WORKER_METRICS_PORT): "
        "Address already in use"
    ]
    assert "Traceback" not in log.read_text()
