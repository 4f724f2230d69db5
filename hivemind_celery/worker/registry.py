"""The worker's side of the registry: register at start, heartbeat, leave at stop.

`RegistryStep` is a bootstep of the worker's main process. It registers this
worker's capacity (CPUs, memory, GPUs from the host monitor, the queues it
consumes) and a thread heartbeats every HIVEMIND_REGISTRY_HEARTBEAT_INTERVAL
seconds with +-20 % jitter, so a fleet started together does not beat in
lockstep. A clean stop (SIGTERM, SIGINT, `celery control shutdown`) removes
the worker at once; a killed worker counts as gone after three missed beats.
One worker at a time (a Redis lock) rebuilds the registry's totals every
HIVEMIND_REGISTRY_RECONCILE_INTERVAL seconds.

It also adds the `celery inspect capabilities` command, which answers with
this worker's registered capacity.

The registry lives in the same Redis as payloads (HIVEMIND_PAYLOAD_REDIS_URL,
default REDIS_URL), where the bridge reads it.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
from typing import Any

import redis
from celery import bootsteps
from celery.worker.control import inspect_command

from hivemind_celery.usage import gpu, host
from hivemind_celery.celery_app import app
from hivemind_celery.site.disk_gate import DiskGate
from hivemind_celery.site.registry import Registry, WorkerCapacity
from hivemind_celery.core.settings import Settings, get_settings

log = logging.getLogger(__name__)

RECONCILE_LOCK = "hm:registry:reconcile"
_current: dict[str, WorkerCapacity] = {}  # what this process registered (for inspect)


def local_capacity(settings: Settings, worker_id: str, hostname: str, queues: list[str]) -> WorkerCapacity:
    """This machine's offer: configured, or everything this process may use."""
    gpus = gpu.list_gpus() if "gpu" in queues else []
    return WorkerCapacity(
        worker_id=worker_id,
        hostname=hostname,
        cpus=settings.capacity_cpus or monitor.usable_cpus(),
        memory_mb=settings.capacity_memory_mb or monitor.total_memory_mb(),
        gpus=len(gpus),
        gpu_memory_mb=sum(g.memory_total_mb for g in gpus),
        gpu_names=[g.name for g in gpus],
        queues=sorted(queues),
    )


class Heartbeat:
    """Keeps one worker registered until `stop()`."""

    def __init__(self, registry: Registry, capacity: WorkerCapacity, interval: float,
                 reconcile_interval: float, gate: DiskGate | None = None) -> None:
        self.registry = registry
        self.capacity = capacity
        self.gate = gate
        self.interval = interval
        self.reconcile_interval = reconcile_interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registry-heartbeat", daemon=True)

    def start(self) -> "Heartbeat":
        self.registry.register(self.capacity)
        _current[self.capacity.worker_id] = self.capacity
        log.info("registered in the site registry: %g CPUs, %d MiB, %d GPUs, queues %s",
                 self.capacity.cpus, self.capacity.memory_mb, self.capacity.gpus,
                 ",".join(self.capacity.queues), extra={"node_id": self.capacity.worker_id})
        if self.gate is not None:
            self.gate.check()
        self._thread.start()
        return self

    def beat(self) -> None:
        if not self.registry.heartbeat(self.capacity.worker_id):
            # Counted gone (a long pause, a Redis restart): come back.
            log.warning("registry had dropped this worker; registering again",
                        extra={"node_id": self.capacity.worker_id})
            self.registry.register(self.gate.offered if self.gate is not None else self.capacity)
        if self.gate is not None:
            self.gate.check()

    def maybe_reconcile(self) -> None:
        client = self.registry.client
        if client.set(RECONCILE_LOCK, self.capacity.worker_id, nx=True, ex=max(1, int(self.reconcile_interval))):
            dropped = self.registry.reconcile()
            log.info("registry totals rebuilt (%d dangling entries dropped)", dropped,
                     extra={"node_id": self.capacity.worker_id})

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
        _current.pop(self.capacity.worker_id, None)
        try:
            if self.gate is not None:
                self.gate.clear()
            self.registry.unregister(self.capacity.worker_id)
            log.info("left the site registry", extra={"node_id": self.capacity.worker_id})
        except redis.RedisError as exc:
            log.warning("could not leave the registry (it expires us instead): %s", exc,
                        extra={"node_id": self.capacity.worker_id})


class RegistryStep(bootsteps.StartStopStep):
    """Registers the worker in the site registry while it runs."""

    label = "HiveMind registry"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.heartbeat: Heartbeat | None = None

    def start(self, parent: Any) -> None:
        settings = get_settings()
        queues = list(parent.app.amqp.queues.consume_from or parent.app.amqp.queues)
        capacity = local_capacity(settings, parent.hostname, socket.gethostname(), queues)
        registry = Registry(redis.Redis.from_url(settings.payload_redis),
                            heartbeat_interval=settings.registry_heartbeat_interval)
        gate = DiskGate(registry, capacity, settings.monitor_disk_path, settings.health_min_disk_free_mb,
                        consumers=_consumers(parent, queues))
        try:
            self.heartbeat = Heartbeat(registry, capacity, settings.registry_heartbeat_interval,
                                       settings.registry_reconcile_interval, gate).start()
        except redis.RedisError:
            # The worker can still run tasks; the bridge just does not see it.
            log.exception("could not register in the site registry", extra={"node_id": parent.hostname})

    def stop(self, parent: Any) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)


def _consumers(parent: Any, queues: list[str]):  # type: ignore[no-untyped-def]
    """Start or stop this worker's consumers from any thread: a control message
    to itself, which the worker's own loop carries out."""
    def switch(on: bool) -> None:
        control = parent.app.control
        for queue in queues:
            if on:
                control.add_consumer(queue, destination=[parent.hostname], reply=False)
            else:
                control.cancel_consumer(queue, destination=[parent.hostname], reply=False)
    return switch


app.steps["worker"].add(RegistryStep)


@inspect_command()
def capabilities(state: Any) -> dict[str, Any]:
    """`celery -A hivemind_celery inspect capabilities`: this worker's capacity."""
    hostname = state.consumer.hostname
    registered = _current.get(hostname)
    if registered is None:
        queues = list(state.consumer.app.amqp.queues.consume_from or [])
        registered = local_capacity(get_settings(), hostname, socket.gethostname(), queues)
    return {**registered.as_dict(), "gpus_detail": [g.as_dict() for g in gpu.list_gpus()]}
