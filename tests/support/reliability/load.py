"""Simulated customers driving the real server, and the ledger of what was accepted.

A shopper plays order dialogs like a person who answers the bot: it posts a message,
retries it the way Chat2Desk retries a webhook (on 503, 429 or a dropped connection)
until it is accepted with a 2xx, and sends its next message only once the step of the
previous one was applied (its processed-marker is in Redis), or, now and then, a whole
script at once, each message as soon as the previous one was accepted. Either way its
messages must be applied in the order they were accepted, and the dialog it should be
in, the replies it should have had and the orders it should have placed follow from its
accepted texts alone: that is the oracle the books compare against.

Like a person, it also gives the bot's answer a moment (REPLY_PATIENCE) before it
writes again, but writes again anyway when the answer is late (stuck in the outbox).

Now and then a shopper posts an accepted message again, as a provider does when it
missed the answer; the system must absorb the repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from redis.asyncio import Redis
from redis.exceptions import RedisError

from dialog import DialogState, advance
from orderbot.conversation.keys import Keys
from tests.support.customers import CLIENT_PHONE, HAPPY_PATH_RU, Customer
from tests.support.reliability.chaos_provider import ChaosChat2Desk

SCRIPTS: tuple[tuple[str, ...], ...] = (
    ("Hello", "Main street 12, apt 3", "+996555123456", "2", "yes"),
    tuple(HAPPY_PATH_RU),
    (
        "Hi there",
        "ab",
        "Main street 12",
        "12345",
        "+996 555 123 456",
        "zero",
        "100",
        "5",
        "yes",
    ),
    ("Здравствуйте", "ул. Ленина 1", "отмена"),
    ("Hello", "Main street 12", "+996555123456", "1", "no"),
    ("👋 привет", "улица 🏠 Токтогула 7 — «дом»", "+996 700 000 001", "1", "да"),
    ("Hi", "Main\x00 street\u202e 12\t apt\u200b 5", "+996555123456", "3", "ok"),
)
ACCEPT_TIMEOUT = 60.0  # a message refused for longer than this counts as not accepted
APPLY_TIMEOUT = 60.0  # an accepted message not applied within this counts as lost
REPLY_PATIENCE = 2.0  # how long a shopper waits for the answer before writing again
REPOST_PROBABILITY = 0.05
# A script sent as one burst, without waiting for each step: per-customer order is then
# the system's to keep (the books check it from the processed-markers' turns).
BURST_PROBABILITY = 0.3
RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8)


@dataclass
class Shopper:
    customer: Customer = field(default_factory=Customer)
    texts: list[str] = field(default_factory=list)  # accepted, in the order they were sent
    message_ids: list[str] = field(default_factory=list)
    accepted_at: list[float] = field(default_factory=list)  # time.monotonic() of each 2xx
    is_probe: bool = False
    dialog: DialogState = field(default_factory=DialogState)  # after the accepted texts
    replies_owed: int = 0  # how many replies those texts call for

    @property
    def client_id(self) -> str:
        return self.customer.client_id


def _suffixes(name: str) -> list[str]:
    return [name[i + 1 :] for i, c in enumerate(name) if c == ":"]


class AppliedWatcher:
    """Resolves waiters once a message's processed-marker appears in Redis.

    One task polls every pending key with a single MGET, so a hundred waiting shoppers
    cost Redis one command per tick. A marker's name holds the customer; a waiter that
    does not know the customer (the fuzzer's messages) is found by a SCAN of the
    test's markers instead.
    """

    def __init__(
        self, redis: Redis, key_prefix: str, tenant: str, provider: str = "chat2desk"
    ) -> None:
        self._redis = redis
        self._keys = Keys(key_prefix)
        self._tenant, self._provider = tenant, provider
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._client_of: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self.applied = 0

    def key(self, client_id: str, message_id: str) -> str:
        customer = f"{self._tenant}:{self._provider}:{client_id}"
        return self._keys.processed_of(customer, message_id)

    async def wait(
        self, message_id: str, timeout: float = APPLY_TIMEOUT, *, client_id: str | None = None
    ) -> bool:
        future = self._pending.get(message_id)
        if future is None:
            future = self._pending[message_id] = asyncio.get_running_loop().create_future()
        if client_id is not None:
            self._client_of[message_id] = client_id
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll(), name="applied-watcher")
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            if self._pending.get(message_id) is future:
                del self._pending[message_id]  # nobody waits for it any more
            return False
        return True

    async def _poll(self) -> None:
        """Runs while anyone waits (each wait has its deadline); ends when nobody does."""
        while self._pending:
            known = [i for i in self._pending if i in self._client_of]
            for start in range(0, len(known), 500):
                chunk = known[start : start + 500]
                try:
                    values = await self._redis.mget(
                        [self.key(self._client_of[i], i) for i in chunk]
                    )
                except (RedisError, OSError):
                    values = [None] * len(chunk)
                self._resolve(m for m, v in zip(chunk, values, strict=True) if v is not None)
            if any(i not in self._client_of for i in self._pending):
                with contextlib.suppress(RedisError, OSError):
                    self._resolve(await self._scanned())
            await asyncio.sleep(0.025)

    async def _scanned(self) -> list[str]:
        """The pending ids whose marker exists, whoever the customer: any `:`-suffix of a
        marker's name may be the message id (ids and client ids may hold colons)."""
        pattern = self.key("*", "*")
        found: list[str] = []
        async for key in self._redis.scan_iter(match=pattern, count=1000):
            name = key.decode() if isinstance(key, bytes) else str(key)
            found += [s for s in _suffixes(name) if s in self._pending]
        return found

    def _resolve(self, message_ids: Iterable[str]) -> None:
        for message_id in message_ids:
            future = self._pending.pop(message_id, None)
            if future is None:
                continue
            self._client_of.pop(message_id, None)
            if not future.done():
                future.set_result(None)
            self.applied += 1

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


@dataclass
class Load:
    """Shoppers against one webhook URL, with the ledger of every answer they got."""

    webhook_url: str
    watcher: AppliedWatcher
    provider: ChaosChat2Desk
    rng: random.Random
    shoppers: list[Shopper] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)  # "200 queued", "503", "error", …
    reposts: int = 0
    not_accepted: list[str] = field(default_factory=list)  # message ids refused until timeout
    not_applied: list[str] = field(default_factory=list)  # accepted, never applied in time
    refused_valid: list[str] = field(default_factory=list)  # a 4xx/5xx to a valid message
    _session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Load:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=15),
            connector=aiohttp.TCPConnector(limit=200),
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.watcher.close()
        if self._session is not None:
            await self._session.close()

    @property
    def accepted(self) -> int:
        return sum(len(s.message_ids) for s in self.shoppers)

    @property
    def failed(self) -> bool:
        return bool(self.not_accepted or self.not_applied or self.refused_valid)

    async def run(self, shoppers: int, seconds: float) -> None:
        """`shoppers` customers order concurrently; none starts a message after `seconds`."""
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        await asyncio.gather(*(self._shop(until) for _ in range(shoppers)))

    async def _shop(self, until: float) -> None:
        shopper = self.new_shopper()
        loop = asyncio.get_running_loop()
        while loop.time() < until:
            script = self.rng.choice(SCRIPTS)
            burst = self.rng.random() < BURST_PROBABILITY
            for index, text in enumerate(script):
                settle = not burst or index == len(script) - 1
                if loop.time() >= until or not await self.say(shopper, text, settle=settle):
                    return

    def new_shopper(self, *, is_probe: bool = False) -> Shopper:
        shopper = Shopper(is_probe=is_probe)
        self.shoppers.append(shopper)
        return shopper

    async def say(self, shopper: Shopper, text: str, *, settle: bool = True) -> bool:
        """Post `text` until accepted, then (`settle`) wait until its step was applied
        and the replies owed so far were delivered."""
        body = shopper.customer.says(text)
        message_id = str(body["message_id"])
        if not await self._post_until_accepted(body):
            self.not_accepted.append(message_id)
            return False
        shopper.texts.append(text)
        shopper.message_ids.append(message_id)
        shopper.accepted_at.append(time.monotonic())
        step = advance(shopper.dialog, text, own_phone=CLIENT_PHONE)
        shopper.dialog, shopper.replies_owed = step.state, shopper.replies_owed + len(step.replies)
        if self.rng.random() < REPOST_PROBABILITY:
            self.reposts += 1
            await self._post(body)
        if not settle:
            return True
        if not await self.watcher.wait(message_id, client_id=shopper.client_id):
            self.not_applied.append(message_id)
            return False
        with contextlib.suppress(TimeoutError):
            await self.provider.wait_for(
                lambda: self.provider.count_for(shopper.client_id) >= shopper.replies_owed,
                REPLY_PATIENCE,
            )
        return True

    async def probe(self, timeout: float = APPLY_TIMEOUT) -> bool:
        """A new customer says hello and is answered: the system works end to end."""
        shopper = self.new_shopper(is_probe=True)
        if not await self.say(shopper, "Hello"):
            return False
        try:
            await self.provider.wait_for(
                lambda: self.provider.count_for(shopper.client_id) > 0, timeout
            )
        except TimeoutError:
            return False
        return True

    async def _post_until_accepted(self, body: dict[str, Any]) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ACCEPT_TIMEOUT
        for attempt in itertools.count():
            status = await self._post(body)
            if status == 200:
                return True
            delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
            if status not in (None, 429, 503) or loop.time() + delay > deadline:
                break
            await asyncio.sleep(delay)
        return False

    async def _post(self, body: dict[str, Any]) -> int | None:
        """The status of one webhook call; None when the connection failed."""
        assert self._session is not None
        try:
            async with self._session.post(self.webhook_url, json=body) as response:
                status = response.status
                answer = await response.json(content_type=None) if status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            self.answers["connection error"] += 1
            return None
        label = f"{status} {answer.get('status')}" if isinstance(answer, dict) else str(status)
        self.answers[label] += 1
        if status != 200:  # nothing valid is refused, whatever is down (the spool is not full)
            self.refused_valid.append(f"{status} for {body['message_id']}")
        return status
