"""A GPU task's GPUs for the whole run: taken from the host's allocator before
the runtime creates anything, kept alive by a small thread, given back at the
end whatever happened. A worker killed mid-task stops renewing; its leases
lapse after HIVEMIND_GPU_LEASE_TTL seconds (site/gpu_allocator.py)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from hivemind_celery.core.model import GpuUsed, TaskSpec
from hivemind_celery.core.settings import Settings
from hivemind_celery.site.gpu_allocator import GpuAllocator, GpuRefused, gpus_wanted
from hivemind_celery.site.prefs import PrefsStore
from hivemind_celery.usage import gpu
from hivemind_celery.usage.gpu import GpuInfo

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5


def offered_now(client: redis.Redis, settings: Settings) -> list[GpuInfo]:
    """What the operator shares (HIVEMIND_GPU_DEVICES), narrowed to the owner's
    choice (the `gpus` preference) when there is one; read per task, so a
    changed choice applies to the next task at once."""
    shared = gpu.offered_gpus(settings.gpu_devices)
    chosen = PrefsStore(client, settings).load().gpus
    return gpu.select(shared, chosen) if chosen else shared


class NoFreeGpu(GpuRefused):
    """Every GPU the task could use stayed busy for HIVEMIND_GPU_WAIT seconds."""


class GpuHold:
    """The GPUs one task holds; `gpus` is empty for a task that wants none."""

    def __init__(
        self, spec: TaskSpec, client: redis.Redis, settings: Settings, offered: Callable[[], list[GpuInfo]] | None = None
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.allocator = GpuAllocator(client, share=settings.gpu_share)
        self._offered = offered or (lambda: offered_now(client, settings))
        self.gpus: list[GpuInfo] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def uuids(self) -> tuple[str, ...]:
        return tuple(g.uuid for g in self.gpus)

    def used(self) -> list[GpuUsed]:
        return [GpuUsed(index=g.index, uuid=g.uuid, name=g.name, memory_total_mb=g.memory_total_mb) for g in self.gpus]

    def acquire(self, should_stop: Callable[[], bool]) -> None:
        """Take the task's GPUs, waiting up to HIVEMIND_GPU_WAIT for busy ones.
        Raises GpuRefused (a task too big for this host), NoFreeGpu, or returns
        early without GPUs when should_stop() says the task was stopped."""
        count = gpus_wanted(self.spec.gpus, self.spec.gpu_memory_mb)
        if count == 0:
            return
        offered = self._offered()
        ttl = self.settings.gpu_lease_ttl
        deadline = time.monotonic() + self.settings.gpu_wait
        waited = False
        while True:
            given = self.allocator.allocate(self.spec.task_id, offered, count, self.spec.gpu_memory_mb, ttl)
            if given:
                self.gpus = given
                break
            if should_stop():
                return
            if time.monotonic() >= deadline:
                raise NoFreeGpu(
                    f"no {count} free GPU(s) on this host within {self.settings.gpu_wait:g}s "
                    f"({len(offered)} offered, each shared by at most {self.settings.gpu_share} task(s))"
                )
            if not waited:
                log.info("all GPUs busy; waiting for one", extra={"task_id": self.spec.task_id})
                waited = True
            time.sleep(POLL_SECONDS)
        log.info("GPUs held: %s", ", ".join(f"{g.index} ({g.uuid})" for g in self.gpus), extra={"task_id": self.spec.task_id})
        self._thread = threading.Thread(target=self._keep, name="gpu-lease", daemon=True)
        self._thread.start()

    def _keep(self) -> None:
        ttl = self.settings.gpu_lease_ttl
        while not self._stop.wait(ttl / 3):
            try:
                if self.allocator.renew(self.spec.task_id, ttl) == 0:
                    log.warning("the task's GPU leases lapsed (Redis away too long?)", extra={"task_id": self.spec.task_id})
            except redis.RedisError as exc:
                log.warning("could not renew the GPU leases: %s", exc, extra={"task_id": self.spec.task_id})

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not self.gpus:
            return
        try:
            self.allocator.release(self.spec.task_id)
        except redis.RedisError as exc:
            log.warning("could not give the GPUs back (they lapse instead): %s", exc, extra={"task_id": self.spec.task_id})
