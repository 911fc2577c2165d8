"""Per-customer order of replies that go through the outbox.

While a customer has a reply waiting in the outbox, their newer replies queue
behind it, so nobody reads answer 2 before answer 1. Each customer has a sorted
set of waiting reply ids (in enqueue order) and a hash of when each was last seen
by a process. Only the head of the set may be sent.

A reply can be registered and then never reach the outbox (a worker dies between
the two and its message is later dead-lettered). Such an orphan would block the
customer forever, so a head not seen for `grace` is dropped from the order.

A worker step reads the number of waiting replies in the same round trip that takes
the customer's lock (conversation/dialog_store.py) and passes it to the worker's reply
dispatcher itself. The count is read under the lock, and only lock holders add to a
customer's order in the dialog path; an operator's status notification racing a step
may be enqueued after the count was read, a race without a defined order either way.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from redis.asyncio import Redis

from orderbot.config.settings import Settings
from orderbot.conversation.batch import batch_for
from orderbot.conversation.keys import Keys
from orderbot.conversation.locks import RELEASE_IF_HELD
from orderbot.envelopes import Conversation

_ENQUEUE = """
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], redis.call('INCR', KEYS[3]), ARGV[1])
end
redis.call('HSET', KEYS[2], ARGV[1], ms)
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
return redis.call('ZSCORE', KEYS[1], ARGV[1])
"""

_MY_TURN = """
if redis.call('GET', KEYS[3]) == ARGV[5] then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 2
end
local function claim()
  if redis.call('SET', KEYS[4], ARGV[3], 'NX', 'PX', ARGV[4]) then
    return 1
  end
  if redis.call('GET', KEYS[4]) == ARGV[3] then
    redis.call('PEXPIRE', KEYS[4], ARGV[4])
    return 1
  end
  return 0
end
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return claim()
end
redis.call('HSET', KEYS[2], ARGV[1], ms)
while true do
  local head = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
  if head == ARGV[1] then
    return claim()
  end
  local seen = tonumber(redis.call('HGET', KEYS[2], head) or '0')
  if ms - seen <= tonumber(ARGV[2]) then
    return 0
  end
  redis.call('ZREM', KEYS[1], head)
  redis.call('HDEL', KEYS[2], head)
end
"""

_DONE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if ARGV[2] ~= '0' then
  redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[2])
end
redis.call('DEL', KEYS[4])
return redis.call('ZCARD', KEYS[1])
"""

# What the outbox is to do with a reply: send it now, wait (behind an earlier reply, or
# while another copy of it is being sent), or nothing: it was sent already (a copy whose
# ack was lost, e.g. to a broker-side close, or published twice by a step that was
# retried after its publish). Copies exist; the claim lets one of them send at a time.
SEND, WAIT, SENT = "send", "wait", "sent"
_TURNS = {0: WAIT, 1: SEND, 2: SENT}


class ReplyOrder:
    def __init__(
        self,
        redis: Redis,
        prefix: str,
        *,
        grace: timedelta,
        ttl: timedelta,
        claim: timedelta = timedelta(seconds=35),
    ) -> None:
        self._keys = Keys(prefix)
        self._grace_ms = int(grace.total_seconds() * 1000)
        self._ttl_ms = int(ttl.total_seconds() * 1000)
        self._claim_ms = int(claim.total_seconds() * 1000)
        # Through the process's Redis batch: concurrent callers share round trips, and a
        # connection lost under uvloop surfaces as redis' ConnectionError (a dependency
        # outage to wait out), not as the loop's RuntimeError.
        self._batch = batch_for(redis)
        self._release = self._batch.script(RELEASE_IF_HELD)
        self._enqueue = self._batch.script(_ENQUEUE)
        self._my_turn = self._batch.script(_MY_TURN)
        self._done = self._batch.script(_DONE)

    async def has_waiting(self, conversation: Conversation) -> bool:
        """Whether replies of the customer wait in the outbox (newer ones queue behind)."""
        return bool(await self._batch.call(("ZCARD", self._keys.outbox_order(conversation))))

    async def enqueue(self, conversation: Conversation, reply_id: str) -> int:
        """Register a reply before it is published to the outbox; returns its position."""
        return int(
            await self._enqueue(keys=self._keys.outbox(conversation), args=[reply_id, self._ttl_ms])
        )

    def _reply_keys(self, conversation: Conversation, reply_id: str) -> list[str]:
        order, seen, _ = self._keys.outbox(conversation)
        return [order, seen, *self._keys.reply(conversation, reply_id)]

    async def turn(
        self, conversation: Conversation, reply_id: str, text: str, claimant: str
    ) -> str:
        """SEND (and `claimant` holds the reply's claim until `done` or `release`), WAIT
        (an earlier reply is waiting, or another copy is being sent) or SENT (this very
        text went out under this id: a step replayed on a newer state can say something
        else under the same id, and that must still be sent)."""
        keys = self._reply_keys(conversation, reply_id)
        args: list[str | int] = [
            reply_id,
            self._grace_ms,
            claimant,
            self._claim_ms,
            _fingerprint(text),
        ]
        return _TURNS[int(await self._my_turn(keys=keys, args=args))]

    async def release(self, conversation: Conversation, reply_id: str, claimant: str) -> None:
        """Give the claim up without sending (the send failed; a retry is scheduled)."""
        await self._release(keys=self._reply_keys(conversation, reply_id)[3:], args=[claimant])

    async def done(self, conversation: Conversation, reply_id: str, *, sent: str | None) -> None:
        """The reply left the order: `sent` (its text), or parked (None: a replay may
        send it)."""
        keys = self._reply_keys(conversation, reply_id)
        marker = _fingerprint(sent) if sent is not None else ""
        await self._done(
            keys=keys, args=[reply_id, self._ttl_ms if sent is not None else 0, marker]
        )


def _fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def reply_order_for(redis: Redis, settings: Settings) -> ReplyOrder:
    """A waiting head is re-seen at least every longest delay tier while the outbox
    keeps up. The grace is far longer than that so that a backlog or an outbox
    worker down for a while does not pass for an orphan and reorder replies; the
    cost is that a true orphan (its message dead-lettered) holds the customer's
    later outbox replies back for that long."""
    longest = max(settings.outbox_delays)
    return ReplyOrder(
        redis,
        settings.redis_key_prefix,
        grace=max(3 * longest + timedelta(minutes=1), timedelta(hours=1)),
        ttl=settings.outbox_max_age + timedelta(days=1),
        claim=3 * settings.send_timeout + timedelta(seconds=5),  # one send, and then some
    )
