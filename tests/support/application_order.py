"""The order a worker applied a customer's messages in, read from the workers' logs:
each `step_applied` line carries the message id and the dialog's turn count, which
counts every message ever applied to the dialog. A customer whose k-th accepted message
was applied at turn k had their steps applied in the order they wrote them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

import orjson

from tests.support.processes import OrderbotProcess


def turns_by_message(workers: Iterable[OrderbotProcess]) -> dict[str, list[int]]:
    """Every message id a worker applied, with the turn(s) it was applied at."""
    applied: dict[str, list[int]] = {}
    for worker in workers:
        for line in worker.logs().splitlines():
            if '"step_applied"' not in line:
                continue
            event = orjson.loads(line)
            applied.setdefault(str(event["correlation_id"]), []).append(int(event["turns"]))
    return applied


def out_of_order(
    accepted: dict[str, list[str]], workers: Iterable[OrderbotProcess]
) -> dict[str, list[tuple[str, list[int]]]]:
    """Customers (client id -> their accepted message ids, in order) whose messages were
    not applied exactly once each, at turns 1, 2, 3, …: what went wrong, per customer."""
    applied = turns_by_message(workers)
    wrong: dict[str, list[tuple[str, list[int]]]] = {}
    for client, message_ids in accepted.items():
        seen = [(m, applied.get(m, [])) for m in message_ids]
        if [turns for _, turns in seen] != [[k] for k in range(1, len(message_ids) + 1)]:
            wrong[client] = seen
    return wrong


async def wait_applied(workers: Sequence[OrderbotProcess], count: int, timeout: float = 60) -> None:
    """Until the workers logged `count` applied steps in all (logged after each commit)."""
    async with asyncio.timeout(timeout):
        while sum(w.logs().count('"step_applied"') for w in workers) < count:
            await asyncio.sleep(0.05)
