"""The customer lock's fencing tokens: never the same twice, within a process or between
two, since a commit fenced by a token that repeated would pass for its holder's."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from orderbot.conversation.locks import ArrivalOrder, ClientLocks
from orderbot.errors import Stopping


async def test_every_hold_of_a_lock_has_a_token_of_its_own(redis: Redis, namespace: str) -> None:
    one, other = ClientLocks(redis, f"{namespace}:", 5.0), ClientLocks(redis, f"{namespace}:", 5.0)
    tokens = []
    for locks in (one, other, one, other):
        async with locks.hold("tenant:chat2desk:42") as token:
            tokens.append(token)
    assert len(set(tokens)) == 4


async def test_a_customer_s_message_behind_one_left_for_redelivery_is_left_too() -> None:
    """The left one comes back after it: applied here first, the later one would be
    applied out of order."""
    arrival = ArrivalOrder()
    applied: list[str] = []
    first_in, proceed = asyncio.Event(), asyncio.Event()

    async def step(name: str, *, leaves: bool = False) -> str:
        try:
            async with arrival.turn("customer"):
                first_in.set()
                if leaves:
                    await proceed.wait()  # the second waits for its turn meanwhile
                    raise Stopping("stopping")
                applied.append(name)
        except Stopping:
            return f"{name} left"
        return f"{name} applied"

    first = asyncio.create_task(step("46", leaves=True))
    await first_in.wait()
    second = asyncio.create_task(step("47"))
    for _ in range(3):  # loop turns: the second task starts and queues for its turn
        await asyncio.sleep(0)
    proceed.set()

    assert list(await asyncio.gather(first, second)) == ["46 left", "47 left"]
    assert applied == []
    assert await step("46 again") == "46 again applied"  # a new turn once both are gone
