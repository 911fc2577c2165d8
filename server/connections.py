"""The listening socket of the server: a cap on concurrent connections, and JSON for
the errors aiohttp's own HTTP parser answers.

aiohttp serves every connection it accepts; with no cap, strangers holding thousands
of connections (idle, or trickling a body) take memory and file descriptors until
accept fails for everyone, the providers included. Past HTTP_MAX_CONNECTIONS a new
connection gets a 503 and is closed at once, so providers retry and the ones already
being served are not slowed down.

A request aiohttp cannot parse (a request line over 8,190 bytes, Content-Length with
Transfer-Encoding, a NUL in a header) never reaches the app's middleware: aiohttp's
protocol answers it as text/plain, echoing part of the bad line (a webhook token
included), and logs a traceback. It is a client error like any other here.
"""

from __future__ import annotations

import asyncio

import orjson
import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from orderbot.runtime import metrics

log = structlog.get_logger(__name__)

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


class _ClientErrorsAsJson(RequestHandler):
    """aiohttp's protocol, but its 4xx for a request it could not parse are a JSON body
    without the request's text and an info line without a traceback. Its 5xx (a
    handler that failed, which the middleware already prevents) stay aiohttp's."""

    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        # The class name says what was wrong; the message quotes the request.
        log.info("bad_http_request", status=status, problem=type(exc).__name__ if exc else None)
        if request.writer.output_size > 0:  # as aiohttp: the connection is broken
            raise ConnectionError("response already started")
        response = web.Response(
            status=status,
            body=orjson.dumps({"error": "malformed HTTP request"}),
            content_type="application/json",
        )
        response.force_close()
        return response


class ConnectionCap:
    """The protocol factory of the listener: aiohttp's handler while the runner's
    server has fewer than `limit` connections, else `_Busy`."""

    def __init__(self, server: web.Server, limit: int) -> None:
        self._server = server
        self._limit = limit

    def __call__(self) -> asyncio.Protocol:
        if len(self._server.connections) >= self._limit:
            return _Busy()
        handler = self._server()
        # The subclass adds no state (no slots), so the handler aiohttp built with all
        # of its arguments becomes one in place.
        handler.__class__ = _ClientErrorsAsJson
        return handler


async def listen(
    runner: web.BaseRunner, host: str, port: int, limit: int, *, reuse_port: bool = False
) -> asyncio.Server:
    """Listen for the runner's server (after `runner.setup()`); close the returned
    server before `runner.cleanup()`, which then drains the connections it accepted.
    `reuse_port`: other processes listen on the same port (SERVER_PROCESSES)."""
    server = runner.server
    if server is None:
        raise RuntimeError("listen() before runner.setup()")
    return await asyncio.get_running_loop().create_server(
        ConnectionCap(server, limit), host, port, reuse_port=reuse_port
    )
