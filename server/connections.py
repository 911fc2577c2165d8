"""The listening socket of the server, with a cap on concurrent connections.

aiohttp serves every connection it accepts; with no cap, strangers holding thousands
of connections (idle, or trickling a body) take memory and file descriptors until
accept fails for everyone, the providers included. Past HTTP_MAX_CONNECTIONS a new
connection gets a 503 and is closed at once, so providers retry and the ones already
being served are not slowed down.
"""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web

from orderbot import metrics

_BODY = orjson.dumps({"error": "too many connections, retry later"})
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)


class _Busy(asyncio.Protocol):
    """A connection over the cap: the 503, then closed; nothing read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        metrics.HTTP_CONNECTIONS_REFUSED.inc()
        if isinstance(transport, asyncio.WriteTransport):
            transport.write(_BUSY)
        transport.close()


class ConnectionCap:
    """The protocol factory of the listener: aiohttp's handler while the runner's
    server has fewer than `limit` connections, else `_Busy`."""

    def __init__(self, server: web.Server, limit: int) -> None:
        self._server = server
        self._limit = limit

    def __call__(self) -> asyncio.Protocol:
        if len(self._server.connections) >= self._limit:
            return _Busy()
        return self._server()


async def listen(runner: web.BaseRunner, host: str, port: int, limit: int) -> asyncio.Server:
    """Listen for the runner's server (after `runner.setup()`); close the returned
    server before `runner.cleanup()`, which then drains the connections it accepted."""
    server = runner.server
    if server is None:
        raise RuntimeError("listen() before runner.setup()")
    return await asyncio.get_running_loop().create_server(
        ConnectionCap(server, limit), host, port, reuse_port=False
    )
