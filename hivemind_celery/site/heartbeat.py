"""Keeping one worker in the site registry: its offer, and the heartbeat thread.

`Heartbeat` registers this worker's capacity (CPUs, memory, GPUs from the host
monitor, the queues it consumes) and beats every HIVEMIND_REGISTRY_HEARTBEAT_INTERVAL
seconds with +-20 % jitter, so a fleet started together does not beat in
lockstep. `stop()` removes the worker at once; a killed worker counts as gone
after three missed beats. One worker at a time (a Redis lock) rebuilds the
registry's totals every HIVEMIND_REGISTRY_RECONCILE_INTERVAL seconds.

No Celery here: the worker's bootstep (worker/registry.py) starts and stops it.
"""

from __future__ import annotations

import logging
import random
import threading

import redis

from hivemind_celery.core import keys
from hivemind_celery.core.settings import Settings
from hivemind_celery.site.disk_gate import DiskGate
from hivemind_celery.site.registry import Registry, WorkerCapacity
from hivemind_celery.usage import gpu, host

log = logging.getLogger(__name__)

REGISTERED: dict[str, WorkerCapacity] = {}  # what this process registered (for `inspect capabilities`)


def local_capacity(settings: Settings, worker_id: str, hostname: str, queues: list[str]) -> WorkerCapacity:
    """This machine's offer: configured, or everything this process may use."""
    gpus = gpu.offered_gpus(settings.gpu_devices) if "gpu" in queues else []  # HIVEMIND_GPU_DEVICES
    return WorkerCapacity(
        worker_id=worker_id,
        hostname=hostname,
        cpus=settings.capacity_cpus or host.usable_cpus(),
        memory_mb=settings.capacity_memory_mb or host.total_memory_mb(),
        gpus=len(gpus),
        gpu_memory_mb=sum(g.memory_total_mb for g in gpus),
        gpu_names=[g.name for g in gpus],
        queues=sorted(queues),
    )


class Heartbeat:
    """Keeps one worker registered until `stop()`."""

    def __init__(
        self,
        registry: Registry,
        capacity: WorkerCapacity,
        interval: float,
        reconcile_interval: float,
        gate: DiskGate | None = None,
    ) -> None:
        self.registry = registry
        self.capacity = capacity
        self.gate = gate
        self.interval = interval
        self.reconcile_interval = reconcile_interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registry-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self.registry.register(self.capacity)
        REGISTERED[self.capacity.worker_id] = self.capacity
        log.info(
            "registered in the site registry: %g CPUs, %d MiB, %d GPUs, queues %s",
            self.capacity.cpus,
            self.capacity.memory_mb,
            self.capacity.gpus,
            ",".join(self.capacity.queues),
            extra={"node_id": self.capacity.worker_id},
        )
        if self.gate is not None:
            self.gate.check()
        self._thread.start()
        return self

    def beat(self) -> None:
        if not self.registry.heartbeat(self.capacity.worker_id):
            # Counted gone (a long pause, a Redis restart): come back.
            log.warning("registry had dropped this worker; registering again", extra={"node_id": self.capacity.worker_id})
            self.registry.register(self.gate.offered if self.gate is not None else self.capacity)
        if self.gate is not None:
            self.gate.check()

    def maybe_reconcile(self) -> None:
        client = self.registry.client
        if client.set(keys.registry_reconcile_lock(), self.capacity.worker_id, nx=True, ex=max(1, int(self.reconcile_interval))):
            dropped = self.registry.reconcile()
            log.info("registry totals rebuilt (%d dangling entries dropped)", dropped, extra={"node_id": self.capacity.worker_id})

    def _run(self) -> None:
        while not self._stop.wait(self.interval * random.uniform(0.8, 1.2)):
            try:
                self.beat()
                self.maybe_reconcile()
            except redis.RedisError as exc:
                # Redis away: keep trying; the registry counts us gone meanwhile.
                log.warning("registry heartbeat failed: %s", exc, extra={"node_id": self.capacity.worker_id})

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        REGISTERED.pop(self.capacity.worker_id, None)
        try:
            if self.gate is not None:
                self.gate.clear()
            self.registry.unregister(self.capacity.worker_id)
            log.info("left the site registry", extra={"node_id": self.capacity.worker_id})
        except redis.RedisError as exc:
            log.warning(
                "could not leave the registry (it expires us instead): %s", exc, extra={"node_id": self.capacity.worker_id}
            )
