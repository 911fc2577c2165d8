"""The session-start sweep deletes the queues killed test runs left, and nothing of a
run that is still alive (the broker is shared with other runs)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aiormq.abc import FieldValue

from tests.support.queue_sweep import (
    ABANDONED_AFTER,
    _process_started_at,
    leftovers,
    list_queues,
    new_namespace,
    parse,
    sweep,
)
from tests.support.services import Services


async def ack(message: AbstractIncomingMessage) -> None:
    await message.ack()


def dead_pid() -> int:
    finished = subprocess.Popen(["true"])
    finished.wait()
    return finished.pid


def test_a_namespace_names_its_creation_time_host_and_pid() -> None:
    name = new_namespace(now=1_800_000_000, pid=4321)

    parsed = parse(f"{name}-messages")

    assert parsed is not None
    assert (parsed.prefix, parsed.created_at, parsed.pid) == (name, 1_800_000_000.0, 4321)
    assert parse("t0123456789-messages") is None  # the old form says nothing: never swept
    assert parse("orders") is None


def test_only_namespaces_of_dead_creators_without_consumers_are_left_overs() -> None:
    now = time.time()
    dead = new_namespace(now=now - 5, pid=dead_pid())
    dead_but_consumed = new_namespace(now=now - 5, pid=dead_pid())
    alive = new_namespace(now=now)  # by this very process
    ancient = new_namespace(now=now - ABANDONED_AFTER - 60)
    queues = {
        f"{dead}-messages": 0,
        f"{dead}-dlq": 0,
        f"{dead_but_consumed}-messages": 1,
        f"{dead_but_consumed}-dlq": 0,
        f"{alive}-dlq": 0,
        f"{ancient}-outbox": 0,
        "t0123456789-dlq": 0,
        "messages": 0,
    }

    assert leftovers(queues, now=now) == sorted(
        [f"{dead}-dlq", f"{dead}-messages", f"{ancient}-outbox"]
    )


def test_a_pid_reused_by_a_later_process_counts_as_dead() -> None:
    started = _process_started_at(os.getpid())
    assert started is not None
    # Made by this pid a minute before this process started: by an earlier process.
    before = new_namespace(now=started - 60, pid=os.getpid())

    assert leftovers({f"{before}-dlq": 0}) == [f"{before}-dlq"]


async def test_the_sweep_deletes_the_queues_of_a_dead_run_and_none_of_a_live_one(
    services: Services, amqp: AbstractChannel
) -> None:
    quorum: dict[str, FieldValue] = {"x-queue-type": "quorum"}
    dead, consumed, alive = (
        new_namespace(pid=dead_pid()),
        new_namespace(pid=dead_pid()),
        new_namespace(),
    )
    left = [f"{dead}-messages", f"{dead}-dlq"]
    kept = [f"{consumed}-messages", f"{consumed}-dlq", f"{alive}-dlq"]
    for name in left + kept:
        await amqp.declare_queue(name, durable=True, arguments=quorum)
    busy = await amqp.declare_queue(f"{consumed}-messages", passive=True)
    tag = await busy.consume(ack)
    try:
        deleted, _ = await asyncio.to_thread(sweep, services.amqp_url)

        assert deleted >= 2
        queues = list_queues()
        assert queues is not None
        assert not set(left) & set(queues)
        assert set(kept) <= set(queues)
    finally:
        await busy.cancel(tag)
        for name in left + kept:
            await amqp.queue_delete(name)
