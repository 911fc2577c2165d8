"""One reliability scenario: load, faults, drain, stop, books.

The load runs for the scenario's seconds while the injectors fault the system at random
moments. Then the shoppers stop and the system is given until a deadline to finish its
work. The books are closed only once it is quiescent, which is decided in two steps:

1. polling (no fixed wait): every owed reply delivered, no customer with replies
   waiting in the reply registry, `messages`, `outbox` and the delay tiers without a
   ready message, the poison parked; or nothing visibly pending for LOSS_AFTER while
   replies are still owed (then they are nowhere: lost, unless step 2 finds them);
2. every process stopped with SIGTERM (each must exit 0), which hands every
   unacknowledged message back to its queue, so the queue depths are now exact. If a
   queue still holds work, that was "not yet", not a loss: the system is started
   again and step 1 repeats, until the deadline.

What is missing once nothing is left anywhere is lost; what is missing while work is
still queued at the deadline is reported as not yet done (and fails the scenario too).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import asyncpg
import orjson
from aio_pika.abc import AbstractChannel
from redis.asyncio import Redis

from orderbot.amqp.topology import Topology
from orderbot.config.settings import Settings
from tests.support.broker_tools import depth, publish_raw
from tests.support.credentials import WEBHOOK_TOKEN
from tests.support.reliability.books import Books, close_books, match_replies, owed_to
from tests.support.reliability.chaos_provider import ChaosChat2Desk
from tests.support.reliability.faults import Faults
from tests.support.reliability.load import AppliedWatcher, Load
from tests.support.reliability.spool import spooled_messages
from tests.support.reliability.system import System
from tests.support.tcp_proxy import TcpProxy

SHOPPERS = 20
POISON = (b"{not json", orjson.dumps({"v": 99, "x": 1}), orjson.dumps({"v": 1, "text": 5}))
DRAIN_LIMIT = 180.0  # seconds after the load by which the system must be quiescent
LOSS_AFTER = 20.0  # replies owed, nothing pending anywhere visible for this long: lost
POLL = 0.1  # seconds between two looks at the system while it drains


@dataclass
class Harness:
    system: System
    provider: ChaosChat2Desk
    redis_proxy: TcpProxy
    amqp_proxy: TcpProxy
    redis: Redis
    db: asyncpg.Connection
    amqp: AbstractChannel
    settings: Settings
    rng: random.Random
    report_every: float
    extra_faults: Mapping[str, Callable[[Faults], Awaitable[None]]] = field(default_factory=dict)

    async def run(
        self,
        name: str,
        seconds: float,
        *injectors: Sequence[str],
        shoppers: int = SHOPPERS,
        also: Sequence[Callable[[Faults, float], Awaitable[None]]] = (),
    ) -> Books:
        """Load for `seconds` with each of `injectors` (a list of fault kinds) running, and
        each of `also` (a fault of the caller's own, given the faults' record and the
        seconds of load)."""
        await self.system.start()
        topology = Topology.from_settings(self.settings)
        watcher = AppliedWatcher(self.redis, self.settings.redis_key_prefix, self.settings.tenant)
        url = f"{self.system.base_url}/webhook/chat2desk/{WEBHOOK_TOKEN}"
        async with Load(url, watcher, self.provider, self.rng) as load:
            faults = Faults(
                system=self.system,
                load=load,
                redis_proxy=self.redis_proxy,
                amqp_proxy=self.amqp_proxy,
                provider=self.provider,
                admin_redis=self.redis,
                db=self.db,
                amqp=self.amqp,
                topology=topology,
                amqp_port=urlsplit(self.settings.amqp_url).port or 5672,
                postgres_port=urlsplit(self.settings.database_url).port or 5432,
                rng=self.rng,
                extra=self.extra_faults,
            )
            started = time.monotonic()
            reporter = asyncio.create_task(self._report(name, load, faults, started))
            poison_ids = {f"poison-{uuid.uuid4().hex[:8]}-{i}" for i in range(len(POISON))}
            try:
                await asyncio.gather(
                    load.run(shoppers, seconds),
                    *(faults.inject(kinds, seconds) for kinds in injectors),
                    *(fault(faults, seconds) for fault in also),
                    self._poison(topology, poison_ids, seconds),
                )
                loaded = time.monotonic() - started
                problems, restarts = await self._finish(load, topology, len(poison_ids))
                drained = time.monotonic() - started - loaded
            finally:
                reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter
            books = await close_books(
                scenario=name,
                seconds=loaded,
                load=load,
                provider=self.provider,
                redis=self.redis,
                db=self.db,
                amqp=self.amqp,
                settings=self.settings,
                faults=faults.records,
                problems=[*faults.problems, *problems],
                poison_ids=poison_ids,
                drain_seconds=drained,
                restarts_to_finish=restarts,
                started=started,
            )
        print("\n".join(books.lines()), flush=True)
        return books

    async def _poison(self, topology: Topology, ids: set[str], seconds: float) -> None:
        """Messages no worker can ever process, published at a random moment of the load."""
        await asyncio.sleep(self.rng.uniform(0, seconds / 2))  # a random moment
        for message_id, body in zip(sorted(ids), POISON, strict=True):
            await publish_raw(self.amqp, topology.partitions, body, message_id=message_id)

    async def _finish(self, load: Load, topology: Topology, poison: int) -> tuple[list[str], int]:
        """Drain until quiescent or DRAIN_LIMIT, then stop every process (SIGTERM).

        Returns the problems (processes that did not exit 0) and how many stops found
        work still queued and started the system again to let it finish.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_LIMIT
        problems: list[str] = []
        restarts = 0
        while True:
            settled = await self._until_settled(load, topology, poison, deadline)
            if not settled or load.failed:
                await self.system.dump_tasks()  # where the work that never finished waits
            exits = await self.system.stop_all()
            problems += [f"{e.label} exited {e.status} at the end" for e in exits if e.status != 0]
            queued = [await depth(self.amqp, name) for name in self._work_queues(topology)]
            queued.append(spooled_messages(self.settings.spool_dir))
            if not any(queued) or loop.time() >= deadline:
                return problems, restarts
            restarts += 1  # unacknowledged work came back to its queue: not done yet
            await self.system.start()

    def _work_queues(self, topology: Topology) -> list[str]:
        return [*topology.partitions, topology.outbox, *(name for name, _ in topology.delay_tiers)]

    async def _until_settled(
        self, load: Load, topology: Topology, poison: int, deadline: float
    ) -> bool:
        """Poll until nothing is left to do: every owed reply delivered, no customer with
        replies waiting, the work queues without a ready message, the poison parked.
        False when the deadline passed first, or when replies were still owed while
        nothing was visibly pending for LOSS_AFTER (the stop then shows the truth)."""
        owed = {s.client_id: owed_to(s).replies for s in load.shoppers if s.message_ids}
        loop = asyncio.get_running_loop()
        idle_since: float | None = None
        while loop.time() < deadline:
            for client, replies in list(owed.items()):
                if match_replies(replies, self.provider.texts_for(client)).missing == 0:
                    del owed[client]
            waiting = await self._customers_waiting()
            queued = [await depth(self.amqp, name) for name in self._work_queues(topology)]
            parked = await depth(self.amqp, topology.dlq)
            if not waiting and not any(queued) and parked >= poison:
                if not owed:
                    return True
                idle_since = loop.time() if idle_since is None else idle_since
                if loop.time() - idle_since > LOSS_AFTER:
                    return False
            else:
                idle_since = None
            await asyncio.sleep(POLL)
        return False

    async def _customers_waiting(self) -> int:
        pattern = f"{self.settings.redis_key_prefix}outbox:*:order"
        return len([key async for key in self.redis.scan_iter(match=pattern, count=1000)])

    async def _report(self, name: str, load: Load, faults: Faults, started: float) -> None:
        """The running books of a long run, every `report_every` seconds."""
        while True:
            await asyncio.sleep(self.report_every)  # a reporting period
            owed = delivered = duplicated = 0
            for shopper in load.shoppers:
                replies = owed_to(shopper).replies
                match = match_replies(replies, self.provider.texts_for(shopper.client_id))
                owed += len(replies)
                delivered += len(replies) - match.missing
                duplicated += len(match.repeats)
            recovered = [f.recovered_in or 0.0 for f in faults.records]
            ready = await depth(self.amqp, Topology.from_settings(self.settings).partitions)
            print(
                f"[{name}] {time.monotonic() - started:.0f}s: messages accepted "
                f"{load.accepted}, applied {load.watcher.applied}; replies owed {owed}, "
                f"delivered {delivered}, duplicated {duplicated}; faults {len(faults.records)}"
                f" (slowest recovery {max(recovered, default=0.0):.1f}s); ready in messages "
                f"{ready}; not applied "
                f"{len(load.not_applied)}, problems {len(faults.problems)}",
                flush=True,
            )
