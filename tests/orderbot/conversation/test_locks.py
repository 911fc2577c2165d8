"""The customer lock's fencing tokens: never the same twice, within a process or between
two, since a commit fenced by a token that repeated would pass for its holder's."""

from __future__ import annotations

from redis.asyncio import Redis

from orderbot.conversation.locks import ClientLocks


async def test_every_hold_of_a_lock_has_a_token_of_its_own(redis: Redis, namespace: str) -> None:
    one, other = ClientLocks(redis, f"{namespace}:", 5.0), ClientLocks(redis, f"{namespace}:", 5.0)
    tokens = []
    for locks in (one, other, one, other):
        async with locks.hold("tenant:chat2desk:42") as token:
            tokens.append(token)
    assert len(set(tokens)) == 4
