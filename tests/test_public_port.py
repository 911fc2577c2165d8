"""What a stranger on the public port can do: nothing that grows the server's state,
costs it more than the request's own bytes, or counts as the server's own fault."""

from __future__ import annotations

import gzip
import uuid
import zlib
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aio_pika.abc import AbstractChannel
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY

from orderbot.settings import Settings
from tests.broker_tools import depth
from tests.customers import Customer

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
    assert await depth(amqp, settings.queue("messages")) == 0


async def test_an_uncompressed_body_marked_identity_is_served(
    client: Client, webhook_url: Callable[[str], str]
) -> None:
    response = await client.post(
        webhook_url(""),
        data=orjson.dumps(Customer().says("hello")),
        headers={"Content-Type": "application/json", "Content-Encoding": "identity"},
    )
    assert response.status == 200
