"""The order a customer's messages were applied in, read from their processed-markers:
each marker holds the dialog's turn count after its step, and turns count every message
ever applied to the dialog. A new customer whose k-th accepted message was applied at
turn k had their steps applied in the order they wrote them."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from redis.asyncio import Redis

from orderbot.config.settings import Settings
from orderbot.conversation.keys import Keys


async def applied_turns(
    redis: Redis, settings: Settings, accepted: Mapping[str, list[str]]
) -> dict[str, int | None]:
    """Each message's turn (client id -> message ids), or None for one not applied (yet)."""
    keys = Keys(settings.redis_key_prefix)
    pairs = [
        (m, keys.processed_of(f"{settings.tenant}:chat2desk:{client}", m))
        for client, ids in accepted.items()
        for m in ids
    ]
    turns: dict[str, int | None] = {}
    for start in range(0, len(pairs), 1000):
        chunk = pairs[start : start + 1000]
        values = await redis.mget([key for _, key in chunk])
        found = zip((m for m, _ in chunk), values, strict=True)
        turns.update({m: int(v) if v is not None else None for m, v in found})
    return turns


def out_of_order(
    accepted: Mapping[str, list[str]], turns: Mapping[str, int | None]
) -> dict[str, list[tuple[str, int | None]]]:
    """New customers (client id -> accepted message ids, in order) whose messages were not
    applied at turns 1, 2, 3, …: each with what happened to their messages."""
    wrong: dict[str, list[tuple[str, int | None]]] = {}
    for client, message_ids in accepted.items():
        seen = [(m, turns.get(m)) for m in message_ids]
        if [t for _, t in seen] != list(range(1, len(message_ids) + 1)):
            wrong[client] = seen
    return wrong


async def wait_applied(
    redis: Redis, settings: Settings, accepted: Mapping[str, list[str]], timeout: float = 60
) -> dict[str, int | None]:
    """Until every message (client id -> message ids) was applied; their turns."""
    async with asyncio.timeout(timeout):
        while True:
            turns = await applied_turns(redis, settings, accepted)
            if all(t is not None for t in turns.values()):
                return turns
            await asyncio.sleep(0.05)
