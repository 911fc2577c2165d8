"""Token buckets in Redis, as a Lua function that any script can call.

Limits are shared by every process (the send rate of a provider account, a customer's
messages a minute), so the count lives in Redis and is taken atomically with Redis's
own clock, which every process agrees on whatever its host's clock says.
"""

# The bucket as a Lua function, shared by every script that takes a token (a step's
# `begin` takes the customer's with the lock, in the same script). `now` is Redis' clock in
# ms, the same for every process; returns 0 (taken) or the ms until a token is due.
TAKE_FUNCTION = """
local t = redis.call('TIME')
local now = t[1] * 1000 + t[2] / 1000
local function take(key, rate, capacity)
  local bucket = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(bucket[1]) or capacity
  local ts = tonumber(bucket[2]) or now
  tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
  local wait = 0
  if tokens >= 1 then
    tokens = tokens - 1
  else
    wait = math.ceil((1 - tokens) / rate)
  end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('PEXPIRE', key, math.ceil(capacity / rate) + 1000)
  return wait
end
"""
