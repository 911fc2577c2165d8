"""What a stranger on the public port can do: nothing that grows the server's state,
costs it more than the request's own bytes, or counts as the server's own fault."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import uuid
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from aio_pika.abc import AbstractChannel
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from structlog.testing import capture_logs

from orderbot.config.settings import Settings
from server.app import make_runner
from server.connections import listen
from server.keys import BROKER
from tests.support.broker_tools import depth, messages_queues
from tests.support.credentials import WEBHOOK_TOKEN
from tests.support.customers import Customer

Client = TestClient[Any, Any]


def _series() -> int:
    return sum(len(metric.samples) for metric in REGISTRY.collect())


async def test_random_webhook_paths_add_no_metric_series(client: Client) -> None:
    # The first stranger may create the `unknown` series; nobody after them adds any.
    first = await client.post(f"/webhook/{uuid.uuid4().hex}", json={})
    assert first.status == 404
    before = _series()
    for n in range(500):
        path = f"/webhook/{uuid.uuid4().hex}" + ("/x" if n % 2 else "")
        response = await client.post(path, json={})
        assert response.status == 404
    assert _series() == before
    text = await (await client.get("/metrics")).text()
    assert 'provider="unknown"' in text


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
async def test_compressed_bodies_are_refused_before_auth_and_nothing_is_queued(
    client: Client,
    amqp: AbstractChannel,
    settings: Settings,
    webhook_url: Callable[[str], str],
    encoding: str,
) -> None:
    body = orjson.dumps(Customer().says("hello"))
    packed = zlib.compress(body) if encoding == "deflate" else gzip.compress(body)
    bomb = gzip.compress(b"\0" * 20_000_000)  # 20 KB on the wire, 20 MB inflated
    headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
    for path, data in (
        (webhook_url(""), packed),
        ("/webhook/chat2desk/wrong-token", bomb),
        ("/webhook/twilio", bomb),
    ):
        response = await client.post(path, data=data, headers=headers)
        assert response.status == 415, path
        assert await response.json() == {"error": "compressed bodies are not accepted"}
    assert await depth(amqp, messages_queues(settings)) == 0


async def test_an_uncompressed_body_marked_identity_is_served(
    client: Client, webhook_url: Callable[[str], str]
) -> None:
    response = await client.post(
        webhook_url(""),
        data=orjson.dumps(Customer().says("hello")),
        headers={"Content-Type": "application/json", "Content-Encoding": "identity"},
    )
    assert response.status == 200


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[int, web.AppRunner]]:
    """The server as production runs it (its runner and listener), on a free port."""
    runner = make_runner(settings)
    await runner.setup()
    listener = None
    try:
        listener = await listen(runner, "127.0.0.1", 0, settings.http_max_connections)
        await asyncio.wait_for(runner.app[BROKER].wait_connected(), 30)
        yield int(listener.sockets[0].getsockname()[1]), runner
    finally:
        if listener is not None:
            listener.close()
        await runner.cleanup()


@pytest.fixture
async def served(settings: Settings, amqp: AbstractChannel, redis: Redis) -> AsyncIterator[int]:
    """The port of the server as production runs it."""
    async with serving(settings) as (port, _):
        yield port


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_client_hanging_up_mid_body_is_a_client_error_without_traceback(
    served: int, amqp: AbstractChannel, settings: Settings
) -> None:
    c2d = {"provider": "chat2desk"}
    received = _sample("orderbot_webhooks_received_total", **c2d)
    gone = _sample("orderbot_webhooks_rejected_total", **c2d, reason="client_disconnected")
    internal = _sample("orderbot_webhooks_rejected_total", **c2d, reason="internal_error")
    body = orjson.dumps(Customer().says("hello"))
    with capture_logs() as logs:
        _, writer = await asyncio.open_connection("127.0.0.1", served)
        writer.write(
            f"POST /webhook/chat2desk/{WEBHOOK_TOKEN} HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body[:10]
        )
        await writer.drain()
        # The handler is waiting for the rest of the body: hang up now.
        await _until(lambda: _sample("orderbot_webhooks_received_total", **c2d) > received)
        writer.close()
        await writer.wait_closed()
        await _until(
            lambda: (
                _sample("orderbot_webhooks_rejected_total", **c2d, reason="client_disconnected")
                > gone
            )
        )
    assert _sample("orderbot_webhooks_rejected_total", **c2d, reason="internal_error") == internal
    [line] = [line for line in logs if line["event"] == "client_disconnected"]
    assert line["log_level"] == "info"
    assert "exc_info" not in line
    assert not [line for line in logs if line["log_level"] in ("error", "critical")]
    assert await depth(amqp, messages_queues(settings)) == 0


async def _exchange(port: int, request: bytes) -> tuple[bytes, asyncio.StreamReader]:
    """Send raw bytes on a new connection; the response's head and the reader."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
    return head, reader


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    """Read until the server closes the connection; False if it does not within 10 s,
    which no timeout of these tests comes near."""
    try:
        async with asyncio.timeout(10):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    return True


async def test_an_idle_keep_alive_connection_is_closed_after_the_timeout(
    make_settings: Callable[..., Settings], amqp: AbstractChannel, redis: Redis
) -> None:
    settings = make_settings(http_keepalive_timeout="200ms")
    async with serving(settings) as (port, _):
        head, reader = await _exchange(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert await _closed_by_server(reader)
        # A connection that never completes its headers is bounded the same way.
        partial, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        assert await _closed_by_server(partial)


async def test_a_body_trickling_past_the_read_timeout_gets_408_and_is_closed(
    make_settings: Callable[..., Settings], amqp: AbstractChannel, redis: Redis
) -> None:
    settings = make_settings(http_read_timeout="200ms")
    async with serving(settings) as (port, _):
        head, reader = await _exchange(
            port,
            f"POST /webhook/chat2desk/{WEBHOOK_TOKEN} HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode(),
        )
        assert head.startswith(b"HTTP/1.1 408")
        assert b"application/json" in head
        assert await _closed_by_server(reader)
    assert await depth(amqp, messages_queues(settings)) == 0


async def test_connections_past_the_cap_get_503_and_the_others_are_served(
    make_settings: Callable[..., Settings], amqp: AbstractChannel, redis: Redis
) -> None:
    settings = make_settings(http_max_connections=2)
    async with serving(settings) as (port, runner):
        server = runner.server
        assert server is not None
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await _until(lambda: len(server.connections) == 2)

        head, reader = await _exchange(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503")
        assert await _closed_by_server(reader)

        # The held ones are still served; once one goes, a new one is served too.
        held[0][1].write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(10):
            assert (await held[0][0].readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        held[1][1].close()
        await _until(lambda: len(server.connections) == 1)
        head, _ = await _exchange(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        held[0][1].close()


_GET = "GET /health HTTP/1.1\r\nHost: x\r\n"
_POST = f"POST /webhook/chat2desk/{WEBHOOK_TOKEN}?pad=%s HTTP/1.1\r\nHost: x\r\n"


@pytest.mark.parametrize(
    "request_bytes",
    [
        (_POST % ("x" * 9000) + "Content-Length: 0\r\n\r\n").encode(),
        (_POST % "" + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").encode(),
        (_GET + f"X-Token: {WEBHOOK_TOKEN}\x00\r\n\r\n").encode(),
        (_GET + f"X-Token: {'y' * 9000}{WEBHOOK_TOKEN}\r\n\r\n").encode(),
    ],
    ids=["request-line-too-long", "content-length-and-chunked", "nul-in-header", "long-header"],
)
async def test_requests_aiohttp_cannot_parse_get_json_without_echo_and_no_traceback(
    served: int, request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with capture_logs() as logs:
        head, reader = await _exchange(served, request_bytes)
        async with asyncio.timeout(10):
            body = await reader.read()
    assert head.split(b" ")[1] == b"400"  # HTTP/1.0 when the version was not read
    assert b"application/json" in head
    assert orjson.loads(body) == {"error": "malformed HTTP request"}
    assert WEBHOOK_TOKEN.encode() not in head + body
    assert [line["log_level"] for line in logs if line["event"] == "bad_http_request"] == ["info"]
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
