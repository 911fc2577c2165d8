"""Redis memory per customer: what one dialog leaves in Redis, by key, from MEMORY USAGE.

    .venv/bin/python -m bench.redis_memory [--customers 200]

Each simulated customer walks the happy-path order dialog through orderbot's own
stores, exactly as a worker's steps write Redis: `begin` (the customer's lock, budget
and notice keys) and `commit` (state and processed-marker) per message, the id of each
reply sent (the own-message key), and the rating owed once the order is delivered. Then
every key of the run is weighed with MEMORY USAGE (the key, its value and Redis's
per-key overhead, as allocated) and summed by kind. Needs the local Redis; the run's keys
are deleted at the end. The figure is what an active dialog costs; the processed-markers
and own-message ids outlive the dialog by DEDUPE_TTL and a day.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import uuid
from collections import Counter
from datetime import timedelta

from redis.asyncio import Redis

from bench.bodies import HAPPY_PATH
from dialog import DialogState, Lang, advance
from orderbot.conversation.dialog_store import DialogStore
from orderbot.conversation.handoff import OwnMessages
from orderbot.conversation.locks import ClientLocks
from orderbot.conversation.owed_ratings import OwedRatings
from orderbot.envelopes import Conversation, InboundMessage

PHONE = "+996555123456"


def _kind(key: str, prefix: str) -> str:
    body = key[len(prefix) :]
    return body.split(":{", 1)[0] if ":{" in body else body.split(":", 1)[0]


async def measure(redis_url: str, customers: int) -> dict[str, object]:
    prefix = f"bench-mem-{uuid.uuid4().hex[:8]}:"
    redis = Redis.from_url(redis_url, decode_responses=True)
    store = DialogStore(redis, prefix, state_ttl=timedelta(days=1), dedupe_ttl=timedelta(days=3))
    locks = ClientLocks(redis, prefix, timeout=10)
    own = OwnMessages(redis, prefix)
    ratings = OwedRatings(redis, prefix)
    try:
        for n in range(customers):
            conversation = Conversation(
                tenant="default", provider="chat2desk", client_id=str(10**9 + n)
            )
            state = DialogState()
            for turn, text in enumerate(HAPPY_PATH, 1):
                message = InboundMessage(
                    message_id=str(5 * 10**8 + n * 10 + turn),
                    conversation=conversation,
                    text=text,
                    client_phone=PHONE,
                )
                step = advance(state, text, own_phone=PHONE)
                take = store.begin(message, per_minute=20)
                async with locks.hold_loading(conversation.key, take) as lease:
                    await store.commit(
                        message,
                        step.state,
                        lock_key=lease.key,
                        lock_token=lease.token,
                        release=True,
                    )
                    lease.released = True
                for index, _ in enumerate(step.replies):
                    own.remember(conversation, f"{message.message_id}{index}")
                state = step.state
            await ratings.expect(conversation, 10_000 + n, Lang.RU)
        await redis.ping()  # the own-message ids queued to ride with the next call went too
        sizes: Counter[str] = Counter()
        counts: Counter[str] = Counter()
        async for key in redis.scan_iter(match=f"{prefix}*", count=1000):
            sizes[_kind(key, prefix)] += int(await redis.memory_usage(key, samples=0) or 0)
            counts[_kind(key, prefix)] += 1
        total = sum(sizes.values())
        return {
            "customers": customers,
            "messages_per_customer": len(HAPPY_PATH),
            "bytes_per_customer": round(total / customers),
            "by_kind": {
                kind: {"keys": counts[kind], "bytes_per_customer": round(sizes[kind] / customers)}
                for kind in sorted(sizes)
            },
            "redis_version": (await redis.info("server"))["redis_version"],
        }
    finally:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}*", count=1000)]
        for start in range(0, len(keys), 500):
            await redis.delete(*keys[start : start + 500])
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=200)
    args = parser.parse_args()
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    print(json.dumps(asyncio.run(measure(url, args.customers)), indent=2))


if __name__ == "__main__":
    main()
