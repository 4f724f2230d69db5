"""Stop taking tasks while the worker's disk is nearly full, instead of failing them.

Checked on every registry heartbeat (HIVEMIND_REGISTRY_HEARTBEAT_INTERVAL).
When HIVEMIND_MONITOR_DISK_PATH has less than HIVEMIND_HEALTH_MIN_DISK_FREE_MB
free, the worker
- registers with zero capacity, so the bridge counts nothing free on it,
  reports the site busy (not "Idle") and refuses ExecuteTask;
- records why under `keys.site_paused()`, so the refusal names the reason
  (read back by `registry.paused_reasons`);
- stops consuming its queues (a `cancel_consumer` control message to itself),
  so messages already queued wait for a worker with room.
When space is back it registers its full capacity and consumes again. Tasks
already running go on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from hivemind_celery.core import keys
from hivemind_celery.observability.health import check_disk
from hivemind_celery.site.registry import Registry, WorkerCapacity

log = logging.getLogger(__name__)

Consumers = Callable[[bool], None]  # True: consume the worker's queues; False: stop


class DiskGate:
    def __init__(
        self, registry: Registry, capacity: WorkerCapacity, path: str, min_free_mb: int, consumers: Consumers | None = None
    ) -> None:
        self.registry = registry
        self.capacity = capacity
        self.path = path
        self.min_free_mb = min_free_mb
        self.consumers = consumers
        self.paused = False

    @property
    def offered(self) -> WorkerCapacity:
        """What the worker registers now: nothing while paused."""
        if not self.paused:
            return self.capacity
        return replace(self.capacity, cpus=0.0, memory_mb=0, gpus=0, gpu_memory_mb=0, gpu_names=[])

    def check(self) -> bool:
        """Pause or resume as the disk says; True when the state changed."""
        result = check_disk(self.path, self.min_free_mb)
        if result.ok == (not self.paused):
            return False
        worker_id = self.capacity.worker_id
        self.paused = not result.ok
        self.registry.register(self.offered)
        if self.paused:
            reason = f"worker {worker_id}: disk nearly full ({result.detail})"
            self.registry.client.hset(keys.site_paused(), worker_id, reason)
            log.warning("taking no tasks: %s", reason, extra={"node_id": worker_id})
        else:
            self.registry.client.hdel(keys.site_paused(), worker_id)
            log.info("disk has room again (%s); taking tasks", result.detail, extra={"node_id": worker_id})
        if self.consumers is not None:
            self.consumers(not self.paused)
        return True

    def clear(self) -> None:
        """The worker leaves: drop its reason."""
        self.registry.client.hdel(keys.site_paused(), self.capacity.worker_id)
