"""What a stranger on the public port can do: nothing that grows the server's state,
costs it more than the request's own bytes, or counts as the server's own fault."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY

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
