"""A loopback TCP proxy whose connections a test can cut, as a network fault would."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass
class TcpProxy:
    upstream_port: int
    port: int = 0
    mode: str = "forward"  # "forward", "refuse" (close at once) or "blackhole" (never answer)
    # Keep a client's side open once its upstream closed, as a client that has read the
    # server's last words but not yet its end of the connection sees it.
    hold_closes: bool = False
    _pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = field(default_factory=list)
    _upstream_closed: int = 0
    _closing: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def connections(self) -> int:
        return len([p for p in self._pairs if not p[0].is_closing()])

    def upstream_ports(self) -> list[int]:
        """Local ports of the open upstream sockets: how the upstream server sees our clients."""
        ports = []
        for client, upstream in self._pairs:
            if upstream is not client and not upstream.is_closing():
                ports.append(int(upstream.get_extra_info("sockname")[1]))
        return ports

    def cut(self) -> None:
        """Abort every open connection (both sides see a reset)."""
        for client, upstream in self._pairs:
            client.transport.abort()
            upstream.transport.abort()
        self._pairs.clear()

    async def upstream_closed(self, count: int) -> None:
        """Wait until `count` upstream connections have closed, all they said passed on."""
        async with self._closing:
            await self._closing.wait_for(lambda: self._upstream_closed >= count)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        if upstream:
            async with self._closing:
                self._upstream_closed += 1
                self._closing.notify_all()
            if self.hold_closes:
                return
        writer.close()

    def outage(self, mode: str = "refuse") -> None:
        """Cut every connection and treat new ones as `mode` until `restore()`."""
        self.mode = mode
        self.cut()

    def restore(self) -> None:
        self.mode = "forward"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "refuse":
            writer.transport.abort()
            return
        if self.mode == "blackhole":
            self._pairs.append((writer, writer))
            await reader.read()  # hold the connection open, answer nothing
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self._pairs.append((writer, up_writer))
        await asyncio.gather(
            self._pipe(reader, up_writer, upstream=False),
            self._pipe(up_reader, writer, upstream=True),
        )


@contextlib.asynccontextmanager
async def running_proxy(upstream_port: int) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(upstream_port)
    server = await asyncio.start_server(proxy._handle, "127.0.0.1", 0)
    proxy.port = server.sockets[0].getsockname()[1]
    try:
        yield proxy
    finally:
        proxy.cut()
        server.close()
        await server.wait_closed()
