"""SERVER_PROCESSES: the started server runs the others on the same port, each a whole
server that takes webhooks with its own spool file and ops port; stopping the first
stops them all."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aio_pika.abc import AbstractChannel

from orderbot.config.settings import ConfigError, Settings
from server.app import check_settings
from server.processes import RESTART_DELAY, RESTART_DELAY_MAX, RESTART_STEADY, restart_delay
from tests.support.credentials import WEBHOOK_TOKEN
from tests.support.customers import Customer
from tests.support.ops import scrape, value
from tests.support.processes import OrderbotProcess, free_port, free_ports_in_a_row, wait_http_ok

POSTS = 40


def _spool_files(directory: Path) -> set[str]:
    return {path.name for path in directory.glob("*.spool.sqlite3")}


async def _post_each_on_its_own_connection(port: int, count: int) -> list[int]:
    """New connections, which the kernel spreads across the processes on the port."""
    url = f"http://127.0.0.1:{port}/webhook/chat2desk/{WEBHOOK_TOKEN}"
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def post(body: dict[str, Any]) -> int:
            async with http.post(url, json=body) as response:
                return response.status

        return list(await asyncio.gather(*(post(Customer().says("hi")) for _ in range(count))))


async def _two_processes(
    config: dict[str, str], tmp_path: Path
) -> tuple[OrderbotProcess, int, int]:
    """A server of two processes: the process, its HTTP port and its first ops port
    (process i serves hers on that port + i)."""
    http_port, ops_port = free_port(), free_ports_in_a_row(2)
    env = {k: v for k, v in config.items() if k != "METRICS_PORT"}
    env.update(SERVER_PROCESSES="2", HTTP_PORT=str(http_port), SERVER_METRICS_PORT=str(ops_port))
    server = await OrderbotProcess("server", env, tmp_path / "server.log", tmp_path).start()
    return server, http_port, ops_port


async def test_two_server_processes_share_the_port_and_both_take_webhooks(
    config: dict[str, str], amqp: AbstractChannel, tmp_path: Path
) -> None:
    server, http_port, ops_port = await _two_processes(config, tmp_path)
    try:
        for port in (ops_port, ops_port + 1):
            await wait_http_ok(f"http://127.0.0.1:{port}/health/ready")

        statuses = await _post_each_on_its_own_connection(http_port, POSTS)

        async with aiohttp.ClientSession() as http:
            received = [
                value(await scrape(http, f"http://127.0.0.1:{port}/metrics"),
                      "orderbot_webhooks_published_total", provider="chat2desk")
                for port in (ops_port, ops_port + 1)
            ]  # fmt: skip
    finally:
        status = await server.stop()

    assert statuses == [200] * POSTS
    assert sum(received) == POSTS
    assert all(count > 0 for count in received), received
    assert _spool_files(Path(config["SPOOL_DIR"])) == {
        f"edge-{http_port}.spool.sqlite3",
        f"edge-{http_port}-1.spool.sqlite3",
    }
    assert status == 0
    assert '"server_process_exited"' not in server.logs()  # the sibling stopped, not died


async def test_stopping_the_first_server_process_stops_its_siblings(
    config: dict[str, str], amqp: AbstractChannel, tmp_path: Path
) -> None:
    server, _http_port, ops_port = await _two_processes(config, tmp_path)
    await wait_http_ok(f"http://127.0.0.1:{ops_port + 1}/health/ready")

    assert await server.stop() == 0
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as http:
            await http.get(f"http://127.0.0.1:{ops_port + 1}/health")


async def test_a_first_server_process_killed_outright_takes_its_siblings_down(
    config: dict[str, str], amqp: AbstractChannel, tmp_path: Path
) -> None:
    server, _http_port, ops_port = await _two_processes(config, tmp_path)
    await wait_http_ok(f"http://127.0.0.1:{ops_port + 1}/health/ready")

    server.send(signal.SIGKILL)
    await server.wait()

    await _until_refused(ops_port + 1)  # the sibling drained and exited on its SIGTERM


async def test_a_sibling_that_dies_is_started_again_and_serves(
    config: dict[str, str], amqp: AbstractChannel, tmp_path: Path
) -> None:
    server, _http_port, ops_port = await _two_processes(config, tmp_path)
    try:
        await wait_http_ok(f"http://127.0.0.1:{ops_port + 1}/health/ready")
        first = _sibling_pids(server.logs())
        os.kill(first[-1], signal.SIGKILL)
        await server.wait_log('"server_process_exited"')

        await _until_refused(ops_port + 1)
        await wait_http_ok(f"http://127.0.0.1:{ops_port + 1}/health/ready")
        again = _sibling_pids(server.logs())
    finally:
        status = await server.stop()

    assert len(first) == 1
    assert len(again) == 2
    assert again[1] != first[0]
    assert '"restart_in":1.0' in server.logs()
    assert status == 0


def _sibling_pids(logs: str) -> list[int]:
    return [
        int(json.loads(line)["pid"])
        for line in logs.splitlines()
        if '"server_process_started"' in line
    ]


def test_a_sibling_that_keeps_dying_is_restarted_ever_more_slowly() -> None:
    delays = [restart_delay(None, ran=0.5)]
    for _ in range(10):
        delays.append(restart_delay(delays[-1], ran=0.5))

    assert delays[:4] == [RESTART_DELAY, 2 * RESTART_DELAY, 4 * RESTART_DELAY, 8 * RESTART_DELAY]
    assert delays[-1] == RESTART_DELAY_MAX


def test_a_sibling_that_ran_a_while_is_restarted_quickly_again() -> None:
    assert restart_delay(RESTART_DELAY_MAX, ran=RESTART_STEADY) == RESTART_DELAY


async def _until_refused(port: int, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout), aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(f"http://127.0.0.1:{port}/health"):
                    pass
            except aiohttp.ClientConnectionError:
                return
            await asyncio.sleep(0.05)


async def test_a_sibling_that_refuses_its_settings_stops_the_server_with_status_2(
    config: dict[str, str], amqp: AbstractChannel, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        sibling_ops_port = taken.getsockname()[1]  # process 1's ops port, held here
        env = {k: v for k, v in config.items() if k != "METRICS_PORT"}
        env.update(
            SERVER_PROCESSES="2",
            HTTP_PORT=str(free_port()),
            SERVER_METRICS_PORT=str(sibling_ops_port - 1),
            METRICS_HOST="127.0.0.1",
        )
        server = await OrderbotProcess("server", env, tmp_path / "server.log", tmp_path).start()
        status = await server.wait(timeout=60)

    lines = server.logs().splitlines()
    assert status == 2
    assert f"orderbot server: cannot listen on 127.0.0.1:{sibling_ops_port} " in "\n".join(lines)
    assert "orderbot server: server process 1 could not start (see its line above)" in lines
    assert "Traceback" not in server.logs()


def test_several_server_processes_need_a_fixed_port(
    make_settings: Any,
) -> None:
    settings: Settings = make_settings(server_processes=2, http_port=0)
    with pytest.raises(ConfigError, match="fixed HTTP_PORT"):
        check_settings(settings)
