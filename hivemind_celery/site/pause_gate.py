"""One worker obeying the owner's preferences (site/prefs.py), checked every
HIVEMIND_PREFS_CHECK_INTERVAL seconds by worker/prefs.py.

Each check: decide() from the stored preferences, the local clock, this host's
non-task CPU (only when a rule reads it), its battery and heat through
`sensors` with core/step_aside.py's hysteresis, and (where known) the owner's
idle time; publish the mode (the
worker's own key, which its running tasks poll to freeze or thaw within a
second, and the site's, which the bridge reads to report busy); on a change
stop or start consuming the worker's queues, so a paused worker takes no new
task. The CPU and memory shares scale what the worker registers, so a lower
share applies to the next task at once; keep_free_disk_gb raises the disk
gate's floor.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from hivemind_celery.core.prefs import RUNNING, Preferences, SiteMode, decide, senses_the_machine
from hivemind_celery.core.step_aside import Readings, StepAside
from hivemind_celery.site.disk_gate import DiskGate
from hivemind_celery.site.prefs import PrefsStore
from hivemind_celery.site.registry import Registry, WorkerCapacity

log = logging.getLogger(__name__)

Consumers = Callable[[bool], None]
# (battery wanted, heat wanted, the owner's gpus) -> what the sensors say (usage/sensors.read, or a test's own)
Sensors = Callable[[bool, bool, list[str] | None], Readings]
Clock = Callable[[], datetime]


def local_now() -> datetime:
    return datetime.now().astimezone()


def shared(capacity: WorkerCapacity, prefs: Preferences) -> WorkerCapacity:
    """What the worker offers under the owner's shares (never less than a milli-CPU and 1 MiB)."""
    return replace(
        capacity,
        cpus=max(0.001, round(capacity.cpus * prefs.cpu_share_percent / 100.0, 3)),
        memory_mb=max(1, int(capacity.memory_mb * prefs.memory_share_percent / 100.0)),
    )


class PauseGate:
    def __init__(
        self,
        store: PrefsStore,
        registry: Registry,
        capacity: WorkerCapacity,
        cpu_percent: Callable[[], float],
        consumers: Consumers | None = None,
        disk_gate: DiskGate | None = None,
        clock: Clock = local_now,
        owner_idle_seconds: Callable[[], float | None] = lambda: None,
        mode_id: str | None = None,
        sensors: Sensors | None = None,
        gpu_tasks: bool = False,
    ) -> None:
        self.store = store
        self.mode_id = mode_id or capacity.worker_id  # whose key the running tasks poll
        self.registry = registry
        self.capacity = capacity  # the full offer; the share scales it
        self.cpu_percent = cpu_percent
        self.consumers = consumers
        self.disk_gate = disk_gate
        self.clock = clock
        self.owner_idle_seconds = owner_idle_seconds
        self.mode: SiteMode = RUNNING
        self.senses = False  # whether the last preferences read the machine (worker/prefs.py checks often then)
        self.sensors = sensors
        self.step_aside = StepAside(gpu_tasks)
        self._offered: WorkerCapacity | None = None
        self._disk_floor_mb = disk_gate.min_free_mb if disk_gate is not None else 0
        if disk_gate is not None and disk_gate.consumers is not None:
            # Both gates switch the same consumers: consume only while neither holds them off.
            switch = disk_gate.consumers
            disk_gate.consumers = lambda on: switch(on and not self.mode.paused)
            self._switch: Consumers | None = switch
        else:
            self._switch = consumers

    @property
    def worker_id(self) -> str:
        return self.capacity.worker_id

    def check(self) -> bool:
        """Decide, publish, and act on a change; True when the mode changed."""
        prefs = self.store.load()
        self._apply_shares(prefs)
        self.senses = senses_the_machine(prefs)
        # Reading the host's CPU walks the task cgroups: only when a rule needs it.
        cpu = self.cpu_percent() if self.senses else 0.0
        mode = decide(prefs, self.clock(), cpu, self.owner_idle_seconds(), self._aside(prefs))
        self.store.publish_worker_mode(self.mode_id, mode)
        if mode.state == self.mode.state:
            self.mode = mode  # the reason may read differently (CPU %)
            return False
        self.mode = mode
        if mode.paused:
            log.warning("pausing: %s", mode.reason, extra={"node_id": self.worker_id})
        else:
            log.info("resuming: the preferences let tasks run again", extra={"node_id": self.worker_id})
        if self._switch is not None:
            disk_full = self.disk_gate is not None and self.disk_gate.paused
            self._switch(not mode.paused and not disk_full)
        return True

    def _aside(self, prefs: Preferences) -> str | None:
        if self.sensors is None:
            return None
        heat = (prefs.max_gpu_temperature_c if self.step_aside.gpu_tasks else prefs.max_cpu_temperature_c) is not None
        wanted = prefs.pause_on_battery or heat
        readings = self.sensors(prefs.pause_on_battery, heat, prefs.gpus) if wanted else Readings()
        return self.step_aside.judge(prefs, readings, time.monotonic())

    def _apply_shares(self, prefs: Preferences) -> None:
        offered = shared(self.capacity, prefs)
        if self.disk_gate is not None:
            self.disk_gate.min_free_mb = max(self._disk_floor_mb, int(prefs.keep_free_disk_gb * 1024))
        if offered == self._offered:
            return
        self._offered = offered
        if self.disk_gate is not None:
            self.disk_gate.capacity = offered
            self.registry.register(self.disk_gate.offered)
        else:
            self.registry.register(offered)
        log.info(
            "offering %.3g CPUs and %d MiB (shares %g %% / %g %%)",
            offered.cpus,
            offered.memory_mb,
            prefs.cpu_share_percent,
            prefs.memory_share_percent,
            extra={"node_id": self.worker_id},
        )
