"""The registry's Lua scripts (registry.py explains the data they keep).

Each script first reaps what expired (ZRANGEBYSCORE -inf now), then does its
one change, atomically; deadlines come from the Redis server's clock.
"""

from __future__ import annotations

from hivemind_celery.core import keys

_REAP_BATCH = 1000

# Per-id keys are built inside the scripts from these templates (prefix, suffix).
WORKER_INFO_TEMPLATE = keys.worker_info("\0").split("\0")
ALLOCATION_TEMPLATE = keys.allocation("\0").split("\0")

_COMMON = """
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local NUMERIC = {'cpus_milli', 'memory_mb', 'gpus', 'gpu_memory_mb'}
-- a Lua number as an integer argument: -1 * 0 would otherwise be sent as
-- "-0", which HINCRBY refuses, and a script error does not roll back
local function int(n) return string.format('%%d', n) end

-- add (sign 1) or subtract (sign -1) one worker's capacity to the site totals
local function count_worker(info, sign)
  local h = redis.call('HMGET', info, 'cpus_milli', 'memory_mb', 'gpus', 'gpu_memory_mb', 'queues', 'gpu_names')
  redis.call('HINCRBY', KEYS[2], 'workers', sign)
  for i, name in ipairs(NUMERIC) do
    redis.call('HINCRBY', KEYS[2], name, int(sign * (tonumber(h[i]) or 0)))
  end
  for _, pair in ipairs({{KEYS[3], h[5]}, {KEYS[4], h[6]}}) do
    local ok, list = pcall(cjson.decode, pair[2] or '[]')
    if ok and type(list) == 'table' then
      for _, name in ipairs(list) do
        if redis.call('HINCRBY', pair[1], tostring(name), sign) <= 0 then redis.call('HDEL', pair[1], name) end
      end
    end
  end
end

local function count_allocation(alloc, sign)
  local h = redis.call('HMGET', alloc, 'cpus_milli', 'memory_mb', 'gpus', 'gpu_memory_mb')
  redis.call('HINCRBY', KEYS[6], 'tasks', sign)
  for i, name in ipairs(NUMERIC) do
    redis.call('HINCRBY', KEYS[6], name, int(sign * (tonumber(h[i]) or 0)))
  end
end

local function worker_key(id) return ARGV[1] .. id .. ARGV[2] end
local function alloc_key(id) return ARGV[3] .. id .. ARGV[4] end

-- reap everything whose deadline passed
local function reap(t)
  for _, pair in ipairs({{KEYS[1], worker_key, count_worker}, {KEYS[5], alloc_key, count_allocation}}) do
    while true do
      local gone = redis.call('ZRANGEBYSCORE', pair[1], '-inf', t, 'LIMIT', 0, %(batch)d)
      for _, id in ipairs(gone) do
        local key = pair[2](id)
        if redis.call('EXISTS', key) == 1 then pair[3](key, -1) end
        redis.call('DEL', key)
        redis.call('ZREM', pair[1], id)
      end
      if #gone < %(batch)d then break end
    end
  end
end
""" % {"batch": _REAP_BATCH}

# ARGV[5..]: id, ttl, then field/value pairs
REGISTER = (
    _COMMON
    + """
local t = now()
reap(t)
local id, ttl = ARGV[5], tonumber(ARGV[6])
local info = worker_key(id)
if redis.call('ZSCORE', KEYS[1], id) then
  count_worker(info, -1)
else
  redis.call('DEL', info)
  redis.call('HSET', info, 'registered_at', t)
end
for i = 7, #ARGV, 2 do redis.call('HSET', info, ARGV[i], ARGV[i + 1]) end
redis.call('HSET', info, 'last_heartbeat', t)
count_worker(info, 1)
redis.call('ZADD', KEYS[1], t + ttl, id)
return 1
"""
)

HEARTBEAT = (
    _COMMON
    + """
local t = now()
reap(t)
local id, ttl = ARGV[5], tonumber(ARGV[6])
if not redis.call('ZSCORE', KEYS[1], id) then return 0 end
redis.call('ZADD', KEYS[1], 'XX', t + ttl, id)
redis.call('HSET', worker_key(id), 'last_heartbeat', t)
return 1
"""
)

UNREGISTER = (
    _COMMON
    + """
reap(now())
local id = ARGV[5]
if not redis.call('ZSCORE', KEYS[1], id) then return 0 end
count_worker(worker_key(id), -1)
redis.call('DEL', worker_key(id))
redis.call('ZREM', KEYS[1], id)
return 1
"""
)

CAPACITY = (
    _COMMON
    + """
reap(now())
return {redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[6]),
        redis.call('HGETALL', KEYS[3]), redis.call('HGETALL', KEYS[4])}
"""
)

# ARGV[5..]: task id, cpus_milli, memory_mb, gpus, gpu_memory_mb, ttl, require_fit
ALLOCATE = (
    _COMMON
    + """
local t = now()
reap(t)
local id, ttl = ARGV[5], tonumber(ARGV[10])
local key = alloc_key(id)
if redis.call('EXISTS', key) == 1 then
  -- GT: a refresh only ever extends (a short worker refresh never cuts a
  -- longer deadline set at intake)
  redis.call('ZADD', KEYS[5], 'GT', t + ttl, id)
  return 1
end
if ARGV[11] == '1' then
  for i, name in ipairs(NUMERIC) do
    local total = tonumber(redis.call('HGET', KEYS[2], name) or '0')
    local used = tonumber(redis.call('HGET', KEYS[6], name) or '0')
    if tonumber(ARGV[5 + i]) > total - used then return 0 end
  end
end
for i, name in ipairs(NUMERIC) do redis.call('HSET', key, name, ARGV[5 + i]) end
redis.call('HSET', key, 'allocated_at', t)
count_allocation(key, 1)
redis.call('ZADD', KEYS[5], t + ttl, id)
return 1
"""
)

RELEASE = (
    _COMMON
    + """
reap(now())
local id = ARGV[5]
local key = alloc_key(id)
redis.call('ZREM', KEYS[5], id)
if redis.call('EXISTS', key) == 0 then return 0 end
count_allocation(key, -1)
redis.call('DEL', key)
return 1
"""
)

RECONCILE = (
    _COMMON
    + """
reap(now())
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[6])
redis.call('HSET', KEYS[2], 'workers', 0)
redis.call('HSET', KEYS[6], 'tasks', 0)
-- count every indexed hash back into the totals; drop index entries whose hash is gone
local function recount(index, key_of, count)
  local dropped = 0
  for _, id in ipairs(redis.call('ZRANGE', index, 0, -1)) do
    if redis.call('EXISTS', key_of(id)) == 1 then
      count(key_of(id), 1)
    else
      redis.call('ZREM', index, id); dropped = dropped + 1
    end
  end
  return dropped
end
return recount(KEYS[1], worker_key, count_worker) + recount(KEYS[5], alloc_key, count_allocation)
"""
)
