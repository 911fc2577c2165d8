"""One reconciler at a time across processes: a Redis key held with a TTL and renewed.

Two reconcilers would not break anything (the worker's processed-marker makes a message
published twice count once), but they would double every provider call and every
recovered count. A holder that dies stops renewing, and the key expires after the TTL:
that bounds how long reconciling pauses when the active process is killed.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta

from redis.asyncio import Redis

# KEYS: the lease. ARGV: owner, ttl in ms. 1 if the caller holds it now.
_HOLD = """
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if owner then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease:
    def __init__(self, redis: Redis, key: str, ttl: timedelta) -> None:
        self._key = key
        self._ttl_ms = max(1, round(ttl.total_seconds() * 1000))
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._hold = redis.register_script(_HOLD)
        self._release = redis.register_script(_RELEASE)

    async def hold(self) -> bool:
        """Take the lease, or renew it if it is ours; False while another process has it."""
        return bool(await self._hold(keys=[self._key], args=[self.owner, self._ttl_ms]))

    async def release(self) -> None:
        await self._release(keys=[self._key], args=[self.owner])
