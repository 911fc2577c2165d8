"""Dialog state and processed-message markers in Redis.

The state and the marker that a message was applied are written by one script
that first checks the writer still holds the customer's lock, so a step is applied
at most once and never over a newer step's state.

A step talks to Redis twice: `begin` takes the customer's lock and, only if it got
it, reads the processed-marker, takes a token of the customer's message budget, and
reads the state, the number of the customer's replies waiting in the outbox and the
rating they owe, if any;
`commit` checks the lock's token, writes state and marker, and may delete the lock in
the same script. The budget is taken only for a message not applied before, so a
redelivered or re-posted message never uses it up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from redis.asyncio import Redis

from dialog import DialogState
from orderbot.conversation.batch import batch_for
from orderbot.conversation.buckets import TAKE_FUNCTION
from orderbot.conversation.key_layout import UntaggedMarkers
from orderbot.conversation.keys import Keys
from orderbot.envelopes import InboundMessage
from orderbot.errors import LockLost

# KEYS: lock, processed-marker, state, the customer's outbox order, the customer's budget,
# the customer's "please wait" marker, the hand-off marker, the customer's owed rating.
# ARGV: token, lease ms, budget tokens per ms (0: no budget), budget capacity, "please
# wait" ms. nil: the lock is busy. {1}: already applied. {3}: a person answers the
# customer (no budget taken: the bot says nothing, not even "please wait"). {2, say
# "please wait" (1/0), waiting replies, state or nil}: over budget. {0, waiting replies,
# state or nil, owed rating or nil}: go on. Marker and hand-off are looked at with one
# EXISTS, and apart only when one of them is there (a duplicate or a hand-off: rare).
_BEGIN = (
    TAKE_FUNCTION
    + """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
if redis.call('EXISTS', KEYS[2], KEYS[7]) > 0 then
  if redis.call('EXISTS', KEYS[2]) == 1 then
    return {1}
  end
  return {3}
end
if tonumber(ARGV[3]) > 0 and take(KEYS[5], tonumber(ARGV[3]), tonumber(ARGV[4])) > 0 then
  local first = redis.call('SET', KEYS[6], '1', 'NX', 'PX', ARGV[5]) and 1 or 0
  return {2, first, redis.call('ZCARD', KEYS[4]), redis.call('GET', KEYS[3])}
end
return {0, redis.call('ZCARD', KEYS[4]), redis.call('GET', KEYS[3]),
        redis.call('GET', KEYS[8])}
"""
)

# KEYS: lock, state, processed-marker. ARGV: token, state ('' leaves it as it is), state
# ttl, marker ttl, release, the dialog's turn count after the step (0: a silent step): the
# marker says which of the customer's steps the message was, so the order steps were
# applied in can be audited after the fact; the turn count of the state the step began
# from ('': the lock must still be held). A lease that lapsed while nobody took the lock,
# with the marker absent and the stored state still the one the step began from, has
# fenced off nothing: the commit goes ahead.
_COMMIT = """
local holder = redis.call('GET', KEYS[1])
if holder ~= ARGV[1] then
  if holder or ARGV[7] == '' or redis.call('EXISTS', KEYS[3]) == 1 then
    return 0
  end
  local stored = redis.call('GET', KEYS[2])
  local turns = 0
  if stored then
    turns = tonumber(cjson.decode(stored)['turns']) or 0
  end
  if turns ~= tonumber(ARGV[7]) then
    return 0
  end
end
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
end
redis.call('SET', KEYS[3], ARGV[6], 'PX', ARGV[4])
if ARGV[5] == '1' then
  redis.call('DEL', KEYS[1])
end
return 1
"""


@dataclass(frozen=True, slots=True)
class Begun:
    """What a step reads under the customer's lock, in the round trip that took it."""

    processed: bool
    waiting_replies: int = 0
    raw_state: str | None = None
    over_budget: bool = False  # the customer's messages a minute are used up
    say_slow_down: bool = False  # and they were not told so in this window yet
    handed_off: bool = False  # a person answers the customer now; nothing else was read
    raw_owed: str | None = None  # the rating they owe, if any (owed_ratings.py)

    def state(self) -> DialogState:
        if self.raw_state is None:
            return DialogState()
        return DialogState.model_validate_json(self.raw_state)


_NOTICE_MS = 60_000  # "please wait" at most once a minute per customer


class DialogStore:
    def __init__(
        self,
        redis: Redis,
        prefix: str,
        *,
        state_ttl: timedelta,
        dedupe_ttl: timedelta,
    ) -> None:
        self.keys = Keys(prefix)
        self._state_ttl_ms = int(state_ttl.total_seconds() * 1000)
        self._dedupe_ttl_ms = int(dedupe_ttl.total_seconds() * 1000)
        batch = batch_for(redis)  # concurrent steps share their round trips
        self._commit = batch.script(_COMMIT)
        self._begin = batch.script(_BEGIN)
        self._untagged = UntaggedMarkers(redis, prefix)

    def begin(
        self, message: InboundMessage, *, per_minute: int | None = None
    ) -> Callable[[str, str, int], Awaitable[Begun | None]]:
        """A lock taker for `ClientLocks.hold_loading` that loads what the step needs, and
        takes one of the customer's `per_minute` messages (None: no budget)."""
        conversation = message.conversation
        keys = [
            self.keys.processed(message),
            self.keys.dialog(conversation),
            self.keys.outbox_order(conversation),
            self.keys.customer_bucket(conversation),
            self.keys.flood_notice(conversation),
            self.keys.handoff(conversation.key),
            self.keys.rating(conversation),
        ]
        # A bucket holds a minute's worth: a burst of one minute's budget is fine.
        budget = (per_minute / 60_000, per_minute) if per_minute else (0, 0)

        async def take(lock_key: str, token: str, lease_ms: int) -> Begun | None:
            # Queued first, so it rides in the same round trip as the script.
            untagged = self._untagged.check(message)
            try:
                reply = await self._begin(
                    keys=[lock_key, *keys], args=[token, lease_ms, *budget, _NOTICE_MS]
                )
            except BaseException:
                if untagged is not None:  # it failed with the pipeline: nobody reads it
                    untagged.add_done_callback(lambda f: f.cancelled() or f.exception())
                raise
            applied_before = untagged is not None and bool(await untagged)
            if reply is None:
                return None
            verdict = int(reply[0])
            if verdict == 1 or applied_before:
                return Begun(processed=True)
            if verdict == 3:
                return Begun(processed=False, handed_off=True)
            if verdict == 2:
                return Begun(
                    processed=False,
                    waiting_replies=int(reply[2]),
                    raw_state=reply[3] if len(reply) > 3 else None,
                    over_budget=True,
                    say_slow_down=bool(int(reply[1])),
                )
            return Begun(
                processed=False,
                waiting_replies=int(reply[1]),
                raw_state=reply[2] if len(reply) > 2 else None,
                raw_owed=reply[3] if len(reply) > 3 else None,
            )

        return take

    async def commit(
        self,
        message: InboundMessage,
        state: DialogState | None,
        *,
        lock_key: str,
        lock_token: str,
        release: bool = False,
        began_at_turn: int | None = None,
    ) -> None:
        """Write state and marker if the lock is still ours; `release`: and delete it.
        `state` None: the marker alone, the dialog stays as it was (a silent step).

        `began_at_turn`: the turn count of the state the step was computed from. Given,
        a lease that ran out while the step was on its way (a step that outlived
        LOCK_TIMEOUT, its renewals late under load) still commits if nobody has taken the
        lock and the dialog is where the step found it: running the step again would
        only send its replies a second time."""
        written = await self._commit(
            keys=[lock_key, self.keys.dialog(message.conversation), self.keys.processed(message)],
            args=[
                lock_token,
                "" if state is None else state.model_dump_json(),
                self._state_ttl_ms,
                self._dedupe_ttl_ms,
                "1" if release else "0",
                0 if state is None else state.turns,
                "" if began_at_turn is None else began_at_turn,
            ],
        )
        if not written:
            raise LockLost(f"lost the lock of {message.conversation.key} before commit")
