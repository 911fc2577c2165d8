"""A minimal HTTP/1.1 keep-alive client on asyncio protocols, for load generation.

aiohttp's client costs several times the CPU per request of this one. On two
shared cores every cycle the load generator burns is taken from the server being
measured, so the generator speaks just enough HTTP for our servers: one request
in flight per connection, responses framed by Content-Length (aiohttp always
sends it for these handlers).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import cast


class ResponseError(Exception):
    """The connection closed or sent something this client does not parse."""


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self._buffer = bytearray()
        self._waiter: asyncio.Future[int] | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ResponseError(f"connection lost: {exc!r}"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self._buffer[:end]).lower()
        marker = head.find(b"\r\ncontent-length:")
        if marker < 0:
            waiter.set_exception(ResponseError("response without Content-Length"))
            return
        line_end = head.find(b"\r\n", marker + 2)
        length = int(head[marker + 17 : line_end if line_end > 0 else len(head)].strip())
        total = end + 4 + length
        if len(self._buffer) < total:
            return
        del self._buffer[:total]
        waiter.set_result(int(head[9:12]))

    async def request(self, data: bytes) -> int:
        """Send one complete request and return the response's status."""
        if self.transport is None or self.closed:
            raise ResponseError("connection closed")
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self._waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class ConnectionPool:
    """Up to `limit` keep-alive connections to one server; callers queue for a free one."""

    def __init__(self, host: str, port: int, limit: int) -> None:
        self._host = host
        self._port = port
        self._limit = limit
        self._idle: collections.deque[_Connection] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._open = 0

    async def _acquire(self) -> _Connection:
        while True:
            while self._idle:
                connection = self._idle.pop()
                if not connection.closed:
                    return connection
                self._open -= 1
            if self._open < self._limit:
                self._open += 1
                try:
                    _, protocol = await asyncio.get_running_loop().create_connection(
                        _Connection, self._host, self._port
                    )
                except BaseException:
                    self._open -= 1
                    self._wake()
                    raise
                return protocol
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _release(self, connection: _Connection) -> None:
        if connection.closed:
            self._open -= 1
        else:
            self._idle.append(connection)
        self._wake()

    async def request(self, data: bytes) -> int:
        connection = await self._acquire()
        try:
            return await connection.request(data)
        except BaseException:
            connection.close()
            connection.closed = True
            raise
        finally:
            self._release(connection)

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


def post_bytes(host: str, port: int, path: str, body: bytes) -> bytes:
    """A complete POST request with a JSON body."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def get_status(host: str, port: int, path: str, within: float = 2.0) -> int:
    """One GET on a fresh connection (readiness probes); raises on any failure."""
    async with asyncio.timeout(within):
        _, protocol = await asyncio.get_running_loop().create_connection(_Connection, host, port)
        try:
            return await protocol.request(
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
            )
        finally:
            with contextlib.suppress(Exception):
                protocol.close()
