"""SERVER_METRICS_PORT moves the server's /metrics and /health/ready off the public port:
strangers then see neither the counters nor which dependency is down."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
from aio_pika.abc import AbstractChannel

from tests.support.processes import free_port, wait_http_ok


async def test_the_ops_routes_move_to_the_server_metrics_port(
    spawn: Callable[..., Any], amqp: AbstractChannel
) -> None:
    public, ops = free_port(), free_port()
    server = await spawn("server", HTTP_PORT=str(public), SERVER_METRICS_PORT=str(ops))
    await wait_http_ok(f"http://127.0.0.1:{ops}/health/ready")

    async with aiohttp.ClientSession() as http:
        statuses = {}
        for base, path in (
            (public, "/health"),
            (public, "/metrics"),
            (public, "/health/ready"),
            (ops, "/metrics"),
        ):
            async with http.get(f"http://127.0.0.1:{base}{path}") as response:
                statuses[(base, path)] = response.status
    assert await server.stop() == 0

    assert statuses == {
        (public, "/health"): 200,
        (public, "/metrics"): 404,
        (public, "/health/ready"): 404,
        (ops, "/metrics"): 200,
    }
