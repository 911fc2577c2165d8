"""`GET /api/conversations` and `GET /api/conversations/{id}/messages`: keyset pages, the
search, the key's tenant only, and clear errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from orderbot.config.settings import Settings
from orderbot.history import store
from tests.support.history import a_tenant, entry
from tests.support.operator_tools import bearer, get_json

Client = TestClient[Any, Any]


@pytest.fixture
def config(config: dict[str, str], namespace: str) -> dict[str, str]:
    return {**config, "TENANT": f"tenant-{namespace}"}


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as created:
        yield created


async def _talk(pool: asyncpg.Pool, tenant: str, client_id: str, *texts: str) -> None:
    async with pool.acquire() as conn:
        await store.write(
            conn,
            [
                entry(tenant, client_id, f"{client_id}-{n}", direction="in", text=text)
                for n, text in enumerate(texts)
            ],
        )


async def test_conversations_come_in_keyset_pages_newest_first(
    client: Client, pool: asyncpg.Pool, settings: Settings
) -> None:
    for n in range(3):
        await _talk(pool, settings.tenant, f"c{n}", "hi")
    status, first = await get_json(client, "/api/conversations", limit="2")
    assert status == 200
    _, second = await get_json(
        client, "/api/conversations", limit="2", after=str(first["next_after"])
    )
    assert [c["client_id"] for c in first["items"]] == ["c2", "c1"]
    assert [c["client_id"] for c in second["items"]] == ["c0"]
    assert second["next_after"] is None


async def test_a_conversations_messages_come_oldest_first_in_pages(
    client: Client, pool: asyncpg.Pool, settings: Settings
) -> None:
    await _talk(pool, settings.tenant, "c1", "one", "two", "three")
    _, listed = await get_json(client, "/api/conversations", phone_or_client="c1")
    (talk,) = listed["items"]
    path = f"/api/conversations/{talk['id']}/messages"
    status, first = await get_json(client, path, limit="2")
    _, rest = await get_json(client, path, after=str(first["next_after"]))
    assert status == 200
    assert [m["text"] for m in first["items"] + rest["items"]] == ["one", "two", "three"]
    assert first["conversation"]["client_id"] == "c1"
    assert {m["direction"] for m in first["items"]} == {"in"}


async def test_another_tenants_conversation_is_neither_listed_nor_readable(
    client: Client, pool: asyncpg.Pool, settings: Settings
) -> None:
    theirs = a_tenant()
    await _talk(pool, theirs, "c9", "secret")
    (their_talk,) = (await store.conversations(pool, theirs)).items
    _, listed = await get_json(client, "/api/conversations")
    status, body = await get_json(client, f"/api/conversations/{their_talk.id}/messages")
    assert listed["items"] == []
    assert (status, body) == (404, {"error": "conversation not found"})


@pytest.mark.parametrize("bad", [{"limit": "0"}, {"after": "x"}, {"colour": "red"}])
async def test_a_bad_query_is_a_422_naming_the_field(client: Client, bad: dict[str, str]) -> None:
    status, body = await get_json(client, "/api/conversations", **bad)
    assert status == 422
    assert body["detail"][0]["field"] == next(iter(bad))


@pytest.mark.parametrize("conversation_id", ["0", "abc", str(2**63), "9" * 40])
async def test_ids_that_cannot_name_a_conversation_get_404(
    client: Client, conversation_id: str
) -> None:
    response = await client.get(f"/api/conversations/{conversation_id}/messages", headers=bearer())
    assert response.status == 404


async def test_without_the_key_conversations_are_401(client: Client) -> None:
    assert (await client.get("/api/conversations")).status == 401
