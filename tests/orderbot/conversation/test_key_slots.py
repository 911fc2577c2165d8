"""Specification: every Lua script orderbot runs names keys of one Redis Cluster slot.

Redis Cluster refuses a script whose keys hash to different slots (CROSSSLOT), so this
is what makes the scripts Cluster-ready. Each script is run for real against Redis
while its keys are recorded; the slots are computed as Redis computes them. The list
of scripts is the source's own: every place that makes a script must have been run.
"""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from dialog import DialogState
from orderbot.config.settings import Settings
from orderbot.conversation import batch as batch_module
from orderbot.conversation.batch import batch_for
from orderbot.conversation.dialog_store import DialogStore
from orderbot.conversation.keys import Keys
from orderbot.conversation.locks import ClientLocks
from orderbot.conversation.owed_ratings import OwedRatings
from orderbot.conversation.reply_order import ReplyOrder
from orderbot.conversation.roll_call import RedisRollCall
from orderbot.delivery.rate_limit import TokenBucket
from orderbot.envelopes import Conversation, InboundMessage
from orderbot.events.bus import RedisEventBus
from orderbot.events.models import LiveEvent
from orderbot.recovery.lease import Lease
from tests.support.cluster_slots import crc16, key_slot
from tests.support.recovery import poll

ROOT = Path(__file__).resolve().parents[3]
# A client id with the characters a hash tag could trip on.
AWKWARD_CLIENT = "whatsapp:+7{70}1}:x"


@dataclass
class Scripts:
    """Where each script was made (file, line), and the keys of each of its runs."""

    runs: dict[tuple[str, int], list[list[str]]] = field(default_factory=dict)
    site_of: dict[int, tuple[str, int]] = field(default_factory=dict)  # by id() of the script

    def made(self) -> tuple[str, int]:
        # The frame that asked for the script: above this spy and the library call.
        for frame in reversed(traceback.extract_stack()[:-2]):
            path = Path(frame.filename).resolve()
            if ROOT / "orderbot" in path.parents and path.name != "batch.py":
                site = (str(path.relative_to(ROOT)), frame.lineno or 0)
                self.runs.setdefault(site, [])
                return site
        raise AssertionError("a script made outside orderbot/")


@pytest.fixture
def scripts(monkeypatch: pytest.MonkeyPatch) -> Scripts:
    """Records every script made and run, then runs it unchanged."""
    seen = Scripts()
    make_batch_script = batch_module.RedisBatch.script
    run_batch_script = batch_module.Script.__call__
    make_registered = Redis.register_script
    run_registered = AsyncScript.__call__

    def batch_script(self: Any, source: str) -> Any:
        script = make_batch_script(self, source)
        seen.site_of[id(script)] = seen.made()
        return script

    def call_batch_script(self: Any, *, keys: Any, args: Any = (), within: float = 0.0) -> Any:
        seen.runs[seen.site_of[id(self)]].append(list(keys))
        return run_batch_script(self, keys=keys, args=args, within=within)

    def register(self: Any, source: str) -> Any:
        script = make_registered(self, source)
        seen.site_of[id(script)] = seen.made()
        return script

    async def call_registered(
        self: Any, keys: Any = None, args: Any = None, client: Any = None
    ) -> Any:
        seen.runs[seen.site_of[id(self)]].append(list(keys or []))
        return await run_registered(self, keys=keys, args=args, client=client)

    monkeypatch.setattr(batch_module.RedisBatch, "script", batch_script)
    monkeypatch.setattr(batch_module.Script, "__call__", call_batch_script)
    monkeypatch.setattr(Redis, "register_script", register)
    monkeypatch.setattr(AsyncScript, "__call__", call_registered)
    return seen


def _script_sites() -> set[tuple[str, int]]:
    """Every place in orderbot/ that makes a Lua script, from the source itself."""
    sites = set()
    for path in sorted((ROOT / "orderbot").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\.script\(|register_script\(", line) and "def script" not in line:
                sites.add((str(path.relative_to(ROOT)), number))
    return sites


def _site_of(text: str) -> tuple[str, int]:
    [site] = [
        (str(path.relative_to(ROOT)), number)
        for path in sorted((ROOT / "orderbot").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if text in line
    ]
    return site


async def _run_every_script(redis: Redis, settings: Settings, scripts: Scripts) -> None:
    prefix = settings.redis_key_prefix
    conversation = Conversation(tenant=settings.tenant, provider="twilio", client_id=AWKWARD_CLIENT)
    message = InboundMessage(message_id="SM1:{x}", conversation=conversation, text="hi")

    store = DialogStore(
        redis, prefix, state_ttl=timedelta(minutes=5), dedupe_ttl=timedelta(minutes=5)
    )
    locks = ClientLocks(redis, prefix, timeout=5)
    async with locks.hold_loading(conversation.key, store.begin(message, per_minute=60)) as lease:
        await store.commit(
            message, DialogState(), lock_key=lease.key, lock_token=lease.token, release=True
        )
    async with locks.hold(conversation.key):  # a plain hold: released by its script
        pass
    renewing = ClientLocks(redis, prefix, timeout=0.03)  # renewed every 10 ms while held
    renewals = scripts.runs[_site_of("batch.script(_RENEW)")]
    async with renewing.hold(conversation.key):
        await poll(lambda: renewals)

    order = ReplyOrder(redis, prefix, grace=timedelta(minutes=1), ttl=timedelta(minutes=5))
    await order.enqueue(conversation, "SM1:0")
    await order.turn(conversation, "SM1:0", "Hello", "me")
    await order.release(conversation, "SM1:0", "me")
    await order.done(conversation, "SM1:0", sent="Hello")

    ratings = OwedRatings(redis, prefix)
    await ratings.expect(conversation, 7, DialogState().lang)
    await ratings.forget(conversation, 7)

    await RedisRollCall(redis, prefix, "messages.0").beat("worker-1", timedelta(seconds=5))
    lease_ = Lease(redis, f"{prefix}reconcile:lease", timedelta(seconds=5))
    await lease_.hold()
    await lease_.release()
    await TokenBucket(redis, per_minute=60).take(Keys(prefix).send_bucket("twilio", "t"))
    bus = RedisEventBus(
        redis, Keys(prefix).events, commands=batch_for(redis), max_length=100, publish_timeout=5
    )
    await bus.publish(LiveEvent.now(settings.tenant, "order", order_id=7))


def test_the_slot_is_computed_as_redis_cluster_computes_it() -> None:
    # The Redis Cluster specification's own examples.
    assert crc16(b"123456789") == 0x31C3
    assert key_slot("foo") == 12182
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers")
    assert key_slot("foo{}{bar}") == key_slot(b"foo{}{bar}")  # the whole key
    assert key_slot("foo{{bar}}zap") == key_slot("{bar")
    assert key_slot("foo{bar}{zap}") == key_slot("bar")


def test_every_key_of_a_customer_carries_their_hash_tag(settings: Settings) -> None:
    keys = Keys(settings.redis_key_prefix)
    conversation = Conversation(tenant="t", provider="twilio", client_id=AWKWARD_CLIENT)
    message = InboundMessage(message_id="SM9", conversation=conversation, text="")
    customer_keys = [
        keys.lock(conversation.key),
        keys.dialog(conversation),
        keys.processed(message),
        *keys.outbox(conversation),
        *keys.reply(conversation, "SM9:0"),
        keys.rating(conversation),
        keys.handoff(conversation.key),
        keys.customer_bucket(conversation),
        keys.flood_notice(conversation),
    ]
    assert {key_slot(key) for key in customer_keys} == {key_slot(customer_keys[0])}


async def test_every_script_names_keys_of_one_slot(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    await _run_every_script(redis, settings, scripts)

    assert set(scripts.runs) == _script_sites(), "a script was not run by this test"
    unrun = [site for site, runs in scripts.runs.items() if not runs]
    assert unrun == []
    crossing = {
        f"{path}:{line}": keys
        for (path, line), runs in scripts.runs.items()
        for keys in runs
        if len({key_slot(key) for key in keys}) > 1
    }
    assert crossing == {}
