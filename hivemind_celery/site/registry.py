"""The site's worker registry and resource allocations, in Redis.

Workers register their capacity and heartbeat; the bridge asks what the site
has and what is free, and allocates resources per task. Reads never list
workers (no KEYS, no SCAN, no walk over all workers):

- `workers_by_deadline` (sorted set: worker -> heartbeat deadline) and one
  hash per worker hold the source of truth;
- `site_capacity`, `site_queues`, `site_gpu_names` hold totals over live
  workers, changed atomically by Lua scripts as workers come and go;
- allocations mirror this: `allocations_by_deadline`, one hash per task,
  totals in `site_allocated`.

A worker that stops heartbeating (SIGKILL, lost host) is not removed by a
timer: every script first reaps the members whose deadline passed
(ZRANGEBYSCORE -inf now: O(log N + expired)) and subtracts them from the
totals, so a capacity read costs O(log N) plus the few that expired. Deadlines
use the Redis server's clock (TIME), so hosts with skewed clocks agree.
`reconcile()` rebuilds the totals from the per-worker hashes (O(N)); a worker
runs it every few minutes as a guard against drift, like the seed's resync.

CPUs are kept in thousandths of a core (integers) so that totals never
drift by floating-point rounding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from hivemind_celery.core import keys
from hivemind_celery.core.units import as_text
from hivemind_celery.site.registry_lua import (
    ALLOCATE as _ALLOCATE,
)
from hivemind_celery.site.registry_lua import (
    ALLOCATION_TEMPLATE as _ALLOCATION,
)
from hivemind_celery.site.registry_lua import (
    CAPACITY as _CAPACITY,
)
from hivemind_celery.site.registry_lua import (
    HEARTBEAT as _HEARTBEAT,
)
from hivemind_celery.site.registry_lua import (
    RECONCILE as _RECONCILE,
)
from hivemind_celery.site.registry_lua import (
    REGISTER as _REGISTER,
)
from hivemind_celery.site.registry_lua import (
    RELEASE as _RELEASE,
)
from hivemind_celery.site.registry_lua import (
    UNREGISTER as _UNREGISTER,
)
from hivemind_celery.site.registry_lua import (
    WORKER_INFO_TEMPLATE as _WORKER_INFO,
)

DEFAULT_HEARTBEAT_INTERVAL = 10.0
MISSED_BEATS = 3  # a worker silent this many beats counts as gone


@dataclass(frozen=True)
class WorkerCapacity:
    """What one worker offers, as it registers it."""

    worker_id: str
    hostname: str
    cpus: float
    memory_mb: int
    gpus: int = 0
    gpu_memory_mb: int = 0
    gpu_names: list[str] = field(default_factory=list)  # one entry per GPU
    queues: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "hostname": self.hostname,
            "cpus": self.cpus,
            "memory_mb": self.memory_mb,
            "gpus": self.gpus,
            "gpu_memory_mb": self.gpu_memory_mb,
            "gpu_names": list(self.gpu_names),
            "queues": list(self.queues),
        }


@dataclass(frozen=True)
class WorkerInfo:
    """A registered worker, as `workers()` lists it."""

    capacity: WorkerCapacity
    registered_at: float
    last_heartbeat: float
    deadline: float


@dataclass(frozen=True)
class Liveness:
    """How many workers are live, and the latest heartbeat among them (Redis
    server time; None with no worker live)."""

    workers: int
    last_heartbeat: float | None


@dataclass(frozen=True)
class SiteCapacity:
    """Totals over live workers, and what allocations leave free."""

    workers: int
    cpus_total: float
    cpus_free: float
    memory_mb_total: int
    memory_mb_free: int
    gpus_total: int
    gpus_free: int
    gpu_memory_mb_total: int
    gpu_memory_mb_free: int
    allocations: int
    gpu_names: list[str]  # distinct GPU models, most common first
    queues: list[str]  # queues some live worker consumes, sorted
    gpu_models: dict[str, int]  # GPU model -> how many such GPUs
    queue_workers: dict[str, int]  # queue -> how many live workers consume it

    def can_fit(self, cpus: float, memory_mb: int, gpus: int = 0, gpu_memory_mb: int = 0) -> bool:
        return (
            _milli(cpus) <= round(self.cpus_free * 1000)
            and memory_mb <= self.memory_mb_free
            and gpus <= self.gpus_free
            and gpu_memory_mb <= self.gpu_memory_mb_free
        )


def _milli(cpus: float) -> int:
    return max(0, round(float(cpus) * 1000))


def _check(**values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, (int, float)) and value >= 0 and value == value and value != float("inf")):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _check_id(name: str, value: str) -> None:
    if not isinstance(value, str) or not value or len(value) > 256:
        raise ValueError(f"{name} must be a non-empty string of at most 256 characters, got {value!r}")


def _pairs(flat: list[Any]) -> dict[str, int]:
    it = iter(flat)
    return {as_text(name): int(float(as_text(value))) for name, value in zip(it, it)}


def paused_reasons(client: redis.Redis) -> dict[str, str]:
    """worker id -> why it takes no tasks now (its disk gate says, site/disk_gate.py)."""
    return {as_text(k): as_text(v) for k, v in client.hgetall(keys.site_paused()).items()}


class Registry:
    """Worker capacity and task allocations of one site.

    `Registry(redis_client)` is all the bridge needs: `capacity()`,
    `can_fit()`, `allocate()`, `release()`. Workers use `register()`,
    `heartbeat()` and `unregister()` (see site/heartbeat.py).
    """

    def __init__(
        self, client: redis.Redis, heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL, missed_beats: int = MISSED_BEATS
    ) -> None:
        self.client = client
        self.ttl = heartbeat_interval * missed_beats
        self._keys = [
            keys.workers_by_deadline(),
            keys.site_capacity(),
            keys.site_queues(),
            keys.site_gpu_names(),
            keys.allocations_by_deadline(),
            keys.site_allocated(),
        ]
        self._templates = [*_WORKER_INFO, *_ALLOCATION]
        self._scripts = {
            name: client.register_script(source)
            for name, source in (
                ("register", _REGISTER),
                ("heartbeat", _HEARTBEAT),
                ("unregister", _UNREGISTER),
                ("capacity", _CAPACITY),
                ("allocate", _ALLOCATE),
                ("release", _RELEASE),
                ("reconcile", _RECONCILE),
            )
        }

    def _call(self, script: str, *args: Any, client: Any = None) -> Any:
        return self._scripts[script](keys=self._keys, args=[*self._templates, *args], client=client)

    # --- workers -------------------------------------------------------------
    def register(self, capacity: WorkerCapacity, ttl: float | None = None) -> None:
        """Add (or update) a worker; its capacity counts until its deadline."""
        self._call("register", *self._register_args(capacity, ttl))

    def _register_args(self, capacity: WorkerCapacity, ttl: float | None) -> list[Any]:
        _check_id("worker_id", capacity.worker_id)
        _check(cpus=capacity.cpus, memory_mb=capacity.memory_mb, gpus=capacity.gpus, gpu_memory_mb=capacity.gpu_memory_mb)
        fields = {
            "hostname": capacity.hostname,
            "cpus_milli": _milli(capacity.cpus),
            "memory_mb": int(capacity.memory_mb),
            "gpus": int(capacity.gpus),
            "gpu_memory_mb": int(capacity.gpu_memory_mb),
            "gpu_names": json.dumps(list(capacity.gpu_names)),
            "queues": json.dumps(sorted(set(capacity.queues))),
        }
        return [capacity.worker_id, ttl or self.ttl, *(item for pair in fields.items() for item in pair)]

    def register_many(self, capacities: list[WorkerCapacity], ttl: float | None = None) -> None:
        """Register several workers in one round trip (tests, benchmarks, a
        supervisor that manages a fleet)."""
        pipe = self.client.pipeline(transaction=False)
        for capacity in capacities:
            self._call("register", *self._register_args(capacity, ttl), client=pipe)
        pipe.execute()

    def heartbeat(self, worker_id: str, ttl: float | None = None) -> bool:
        """Push the deadline out; False if the worker was already counted gone
        (it must register again)."""
        return bool(self._call("heartbeat", worker_id, ttl or self.ttl))

    def unregister(self, worker_id: str) -> bool:
        """Remove a worker at once (clean shutdown); False if it was not there."""
        return bool(self._call("unregister", worker_id))

    def is_live(self, worker_id: str) -> bool:
        """Is this worker registered and heartbeating? O(log N)."""
        self._call("capacity")  # reap the expired first
        return self.client.zscore(keys.workers_by_deadline(), worker_id) is not None

    def liveness(self) -> Liveness:
        """How many workers are live and when the freshest beat: O(log N), three round trips.
        The freshest is the worker whose deadline lies furthest out."""
        self._call("capacity")  # reap the expired first
        pipe = self.client.pipeline(transaction=False)
        pipe.zcard(keys.workers_by_deadline())
        pipe.zrevrange(keys.workers_by_deadline(), 0, 0)
        count, newest = pipe.execute()
        beat = self.client.hget(keys.worker_info(as_text(newest[0])), "last_heartbeat") if newest else None
        return Liveness(int(count), float(as_text(beat)) if beat else None)

    def workers(self) -> list[WorkerInfo]:
        """Every live worker, for display. O(N): not for hot paths."""
        self._call("capacity")  # reap the expired first
        members = cast(list[tuple[bytes, float]], self.client.zrange(keys.workers_by_deadline(), 0, -1, withscores=True))
        pipe = self.client.pipeline(transaction=False)
        for member, _ in members:
            pipe.hgetall(keys.worker_info(as_text(member)))
        infos = []
        for (member, deadline), raw in zip(members, pipe.execute()):
            if not raw:
                continue
            data = {as_text(k): as_text(v) for k, v in raw.items()}
            capacity = WorkerCapacity(
                worker_id=as_text(member),
                hostname=data.get("hostname", ""),
                cpus=int(data.get("cpus_milli", 0)) / 1000,
                memory_mb=int(data.get("memory_mb", 0)),
                gpus=int(data.get("gpus", 0)),
                gpu_memory_mb=int(data.get("gpu_memory_mb", 0)),
                gpu_names=json.loads(data.get("gpu_names", "[]")),
                queues=json.loads(data.get("queues", "[]")),
            )
            infos.append(
                WorkerInfo(capacity, float(data.get("registered_at", 0)), float(data.get("last_heartbeat", 0)), float(deadline))
            )
        return sorted(infos, key=lambda info: info.capacity.worker_id)

    # --- site totals ---------------------------------------------------------
    def capacity(self) -> SiteCapacity:
        """Totals and free capacity: O(log N + expired), one round trip."""
        totals, allocated, queues, gpu_names = (_pairs(part) for part in self._call("capacity"))
        cpus, memory = totals.get("cpus_milli", 0), totals.get("memory_mb", 0)
        gpus, gpu_memory = totals.get("gpus", 0), totals.get("gpu_memory_mb", 0)
        return SiteCapacity(
            workers=totals.get("workers", 0),
            cpus_total=cpus / 1000,
            cpus_free=max(0, cpus - allocated.get("cpus_milli", 0)) / 1000,
            memory_mb_total=memory,
            memory_mb_free=max(0, memory - allocated.get("memory_mb", 0)),
            gpus_total=gpus,
            gpus_free=max(0, gpus - allocated.get("gpus", 0)),
            gpu_memory_mb_total=gpu_memory,
            gpu_memory_mb_free=max(0, gpu_memory - allocated.get("gpu_memory_mb", 0)),
            allocations=allocated.get("tasks", 0),
            gpu_names=sorted(gpu_names, key=lambda name: (-gpu_names[name], name)),
            queues=sorted(queues),
            gpu_models=gpu_names,
            queue_workers=queues,
        )

    def can_fit(self, cpus: float, memory_mb: int, gpus: int = 0, gpu_memory_mb: int = 0) -> bool:
        """Would the site's free capacity hold this task now?"""
        return self.capacity().can_fit(cpus, memory_mb, gpus, gpu_memory_mb)

    # --- allocations ---------------------------------------------------------
    def allocate(
        self,
        task_id: str,
        cpus: float,
        memory_mb: int,
        gpus: int = 0,
        gpu_memory_mb: int = 0,
        ttl: float = 3600.0,
        require_fit: bool = False,
    ) -> bool:
        """Hold resources for a task until `release` or `ttl` seconds pass.

        Idempotent per task id: a second call (the worker's, after the
        bridge's at intake) changes no totals and only pushes the deadline out
        (never in), which is also how a running task keeps its allocation alive. With
        `require_fit`, a new allocation that does not fit is refused (False),
        atomically with the check.
        """
        _check_id("task_id", task_id)
        _check(cpus=cpus, memory_mb=memory_mb, gpus=gpus, gpu_memory_mb=gpu_memory_mb, ttl=ttl)
        return bool(
            self._call(
                "allocate",
                task_id,
                _milli(cpus),
                int(memory_mb),
                int(gpus),
                int(gpu_memory_mb),
                float(ttl),
                "1" if require_fit else "0",
            )
        )

    def release(self, task_id: str) -> bool:
        """Give a task's resources back; False if it held none (idempotent)."""
        return bool(self._call("release", task_id))

    def reconcile(self) -> int:
        """Rebuild every total from the per-worker and per-task hashes (O(N));
        returns how many dangling index entries were dropped."""
        return int(self._call("reconcile"))
