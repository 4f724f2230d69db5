"""The worker obeys the owner's preferences: site/pause_gate.py checked in a
thread of the worker's main process (celery_app adds this step, after the
registry's, whose disk gate it shares).

How often: every HIVEMIND_PREFS_CHECK_INTERVAL seconds while a rule reads the
machine (CPU, the owner's input). Otherwise the decision changes only when the
owner saves the preferences (the step watches their channel and checks at once,
so a running task is paused within about a second), with the clock (hours, a
timed pause) and with the battery and heat: for those it looks every
IDLE_CHECK_SECONDS (well inside the published mode's lifetime,
site/prefs.MODE_TTL_SECONDS), and at once when a task arrives (the task_received
hook below), before it can run long. Without the watch (Redis cannot be
subscribed to) it looks every second while it holds a task, as before.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from celery import bootsteps

from hivemind_celery.core.redis_client import payload_redis
from hivemind_celery.core.settings import get_settings
from hivemind_celery.site.heartbeat import local_capacity
from hivemind_celery.site.pause_gate import PauseGate
from hivemind_celery.site.prefs import MODE_TTL_SECONDS, PrefsStore, watch_changes
from hivemind_celery.site.registry import Registry
from hivemind_celery.usage import sensors
from hivemind_celery.usage.task_cpu import NonTaskCpu
from hivemind_celery.worker.registry import RegistryStep, consumers_switch

log = logging.getLogger(__name__)

IDLE_CHECK_SECONDS = 4.0
assert IDLE_CHECK_SECONDS * 2 < MODE_TTL_SECONDS, "an idle worker must republish well before its mode lapses"

# Set by a task's arrival (and by stop): the check loop runs at once.
_wake = threading.Event()


def wake_on_task(**_: Any) -> None:
    """task_received hook: judge the preferences now, the task may have to wait."""
    _wake.set()


def _tasks_here() -> bool:
    from celery.worker import state

    return bool(state.reserved_requests)


class PrefsStep(bootsteps.StartStopStep):
    label = "HiveMind preferences"
    requires = (RegistryStep,)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: Any = None  # the preferences channel's thread (site/prefs.watch_changes)
        self.gate: PauseGate | None = None

    def start(self, parent: Any) -> None:
        settings = get_settings()
        client = payload_redis(settings)
        queues = list(parent.app.amqp.queues.consume_from or parent.app.amqp.queues)
        capacity = local_capacity(settings, parent.hostname, socket.gethostname(), queues)
        registry_step = next((s for s in parent.steps if isinstance(s, RegistryStep)), None)
        heartbeat = registry_step.heartbeat if registry_step is not None else None
        disk_gate = heartbeat.gate if heartbeat is not None else None
        cpu = NonTaskCpu(settings.worker_id)
        registry = (
            disk_gate.registry
            if disk_gate is not None
            else Registry(client, heartbeat_interval=settings.registry_heartbeat_interval)
        )
        gpu_tasks = "gpu" in queues

        def read_sensors(battery: bool, heat: bool, owner_gpus: list[str] | None) -> sensors.Readings:
            return sensors.read(gpu_tasks, settings.gpu_devices, battery, heat, owner_gpus)

        # The mode goes under the worker id the tasks know (HIVEMIND_WORKER_ID), not Celery's node name.
        self.gate = PauseGate(
            PrefsStore(client, settings),
            registry,
            capacity,
            cpu.percent,
            consumers=consumers_switch(parent, queues),
            disk_gate=disk_gate,
            mode_id=settings.worker_id,
            sensors=read_sensors,
            gpu_tasks=gpu_tasks,
        )
        self._stop.clear()
        _wake.clear()
        self._watch = watch_changes(client, _wake.set)
        self._thread = threading.Thread(
            target=self._run, args=(settings.prefs_check_interval,), name="hivemind-prefs", daemon=True
        )
        self._thread.start()

    def next_wait(self, interval: float) -> float:
        gate = self.gate
        if gate is None or gate.senses or (self._watch is None and _tasks_here()):
            return interval
        return max(interval, IDLE_CHECK_SECONDS)

    def _run(self, interval: float) -> None:
        wait = interval  # the first check once the worker's own consumers can hear a switch
        while True:
            _wake.wait(wait)
            _wake.clear()
            if self._stop.is_set():
                return
            try:
                if self.gate is not None:
                    self.gate.check()
            except Exception:  # noqa: BLE001 - Redis briefly gone: check again next round
                log.warning("preferences check failed", exc_info=True)
            wait = self.next_wait(interval)

    def stop(self, parent: Any) -> None:
        self._stop.set()
        _wake.set()
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.gate is not None:
            try:
                self.gate.store.forget_worker(self.gate.mode_id)
            except Exception:  # noqa: BLE001 - Redis gone: the entry goes stale by itself
                log.warning("could not withdraw this worker's mode", exc_info=True)
            self.gate = None

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)
