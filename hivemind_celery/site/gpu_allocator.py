"""Which GPUs of this host a task holds: one lease per (GPU, task) in Redis.

Every pool process of every worker on a host takes its GPUs through the same
sorted set (`keys.gpu_leases(host)`), changed only by the Lua scripts below, so
two tasks never get one GPU unless HIVEMIND_GPU_SHARE allows it. A lease has
a deadline (Redis server time) that the running task pushes out; a crashed
worker stops pushing, and its leases lapse after HIVEMIND_GPU_LEASE_TTL:
every script first drops the leases whose deadline passed (the reconcile is
part of each allocation, not a timer that may not run).

With a share above 1, a card takes another task only while the GPU memory the
tasks on it asked for, plus this task's, fits the card's total.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

import redis

from hivemind_celery.core import keys
from hivemind_celery.core.errors import HivemindError
from hivemind_celery.usage.gpu import GpuInfo

_EXPIRE = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
"""

# ARGV: task id, gpus wanted, MiB per GPU, share, ttl, then pairs (uuid, total MiB)
# of the offered GPUs. Returns the uuids given (the task's earlier ones if it
# holds some already), or an empty list when not enough are free now.
_ALLOCATE = (
    _EXPIRE
    + """
local task, count, need, share, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local deadline = now + ttl
local holders, used, mine = {}, {}, {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local uuid, owner, mem = string.match(member, '^([^|]*)|(.*)|(%d+)$')
  if owner == task then
    table.insert(mine, member)
  elseif uuid then
    holders[uuid] = (holders[uuid] or 0) + 1
    used[uuid] = (used[uuid] or 0) + tonumber(mem)
  end
end
if #mine > 0 then
  local uuids = {}
  for _, member in ipairs(mine) do
    redis.call('ZADD', KEYS[1], deadline, member)
    table.insert(uuids, string.match(member, '^([^|]*)|'))
  end
  return uuids
end
local free = {}
for i = 6, #ARGV, 2 do
  local uuid, total = ARGV[i], tonumber(ARGV[i + 1])
  local n = holders[uuid] or 0
  if n < share and total - (used[uuid] or 0) >= need then
    table.insert(free, {uuid = uuid, n = n, order = i})
  end
end
if #free < count then
  return {}
end
-- the least shared cards first, then NVML's order
table.sort(free, function(a, b) if a.n ~= b.n then return a.n < b.n end return a.order < b.order end)
local given = {}
for i = 1, count do
  redis.call('ZADD', KEYS[1], deadline, free[i].uuid .. '|' .. task .. '|' .. need)
  table.insert(given, free[i].uuid)
end
return given
"""
)

# ARGV: task id, ttl. Pushes out the task's leases; returns how many it holds.
_RENEW = (
    _EXPIRE
    + """
local n = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local owner = string.match(member, '^[^|]*|(.*)|%d+$')
  if owner == ARGV[1] then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), member)
    n = n + 1
  end
end
return n
"""
)

# ARGV: task id. Drops the task's leases; returns how many went.
_RELEASE = (
    _EXPIRE
    + """
local n = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local owner = string.match(member, '^[^|]*|(.*)|%d+$')
  if owner == ARGV[1] then
    redis.call('ZREM', KEYS[1], member)
    n = n + 1
  end
end
return n
"""
)


class GpuRefused(HivemindError):
    """The task asks for more GPUs or GPU memory than this host offers; the
    message says what it asked and what there is."""


@dataclass(frozen=True)
class GpuLease:
    """One GPU held by one task, as recorded in Redis."""

    uuid: str
    task_id: str
    memory_mb: int
    deadline: float


def gpus_wanted(gpus: int, gpu_memory_mb: int) -> int:
    """A task that names GPU memory but no GPU count wants one GPU."""
    return gpus or (1 if gpu_memory_mb > 0 else 0)


def check_fits(offered: list[GpuInfo], gpus: int, memory_mb: int) -> None:
    """Raise GpuRefused when no state of this host could ever give the task
    `gpus` GPUs with `memory_mb` MiB each."""
    if gpus > len(offered):
        raise GpuRefused(f"the task asks for {gpus} GPU(s); this host offers {len(offered)}")
    big_enough = [g for g in offered if g.memory_total_mb >= memory_mb]
    if len(big_enough) < gpus:
        largest = max(offered, key=lambda g: g.memory_total_mb)
        raise GpuRefused(
            f"the task asks for {memory_mb} MiB of GPU memory on each of {gpus} GPU(s); only "
            f"{len(big_enough)} GPU(s) here have that much (the largest, GPU {largest.index} "
            f"{largest.name}, has {largest.memory_total_mb} MiB)"
        )


class GpuAllocator:
    """The GPU leases of one host (default: this machine's hostname)."""

    def __init__(self, client: redis.Redis, host: str | None = None, share: int = 1) -> None:
        if share < 1:
            raise ValueError("share must be at least 1")
        self.client = client
        self.host = host or socket.gethostname()
        self.share = share
        self._key = keys.gpu_leases(self.host)
        self._allocate = client.register_script(_ALLOCATE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def allocate(self, task_id: str, offered: list[GpuInfo], gpus: int, memory_mb: int, ttl: float) -> list[GpuInfo] | None:
        """Give the task `gpus` of the `offered` GPUs for `ttl` seconds: the GPUs,
        or None while not enough are free. Raises GpuRefused if they never could be."""
        if gpus < 1:
            raise ValueError("gpus must be at least 1")
        check_fits(offered, gpus, memory_mb)
        pairs: list[Any] = []
        for g in offered:
            pairs += [g.uuid, g.memory_total_mb]
        by_uuid = {g.uuid: g for g in offered}
        for _ in range(2):
            given = self._allocate(keys=[self._key], args=[task_id, gpus, int(memory_mb), self.share, float(ttl), *pairs])
            if not given:
                return None
            uuids = [u.decode() if isinstance(u, bytes) else str(u) for u in given]
            if all(u in by_uuid for u in uuids):
                return [by_uuid[u] for u in uuids]
            # An earlier run of this task (on a worker offering other GPUs) left
            # leases this one may not use: give them back and choose again.
            self.release(task_id)
        return None

    def renew(self, task_id: str, ttl: float) -> int:
        """Push the task's leases `ttl` seconds out; how many it still holds."""
        return int(self._renew(keys=[self._key], args=[task_id, float(ttl)]))

    def release(self, task_id: str) -> int:
        """Give the task's GPUs back; how many it held."""
        return int(self._release(keys=[self._key], args=[task_id]))

    def leases(self) -> list[GpuLease]:
        """Every lease on this host as recorded now (expired ones included
        until the next script drops them)."""
        found = []
        rows: Any = self.client.zrange(self._key, 0, -1, withscores=True)
        for member, score in rows:
            text = member.decode() if isinstance(member, bytes) else str(member)
            uuid, _, rest = text.partition("|")
            task_id, _, memory = rest.rpartition("|")
            found.append(GpuLease(uuid=uuid, task_id=task_id, memory_mb=int(memory), deadline=float(score)))
        return found
