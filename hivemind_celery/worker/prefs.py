"""The worker obeys the owner's preferences: site/pause_gate.py checked every
HIVEMIND_PREFS_CHECK_INTERVAL seconds in a thread of the worker's main process
(celery_app adds this step, after the registry's, whose disk gate it shares)."""

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
from hivemind_celery.site.prefs import PrefsStore
from hivemind_celery.site.registry import Registry
from hivemind_celery.usage.task_cpu import NonTaskCpu
from hivemind_celery.worker.registry import RegistryStep, consumers_switch

log = logging.getLogger(__name__)


class PrefsStep(bootsteps.StartStopStep):
    label = "HiveMind preferences"
    requires = (RegistryStep,)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
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
        registry = disk_gate.registry if disk_gate is not None else Registry(
            client, heartbeat_interval=settings.registry_heartbeat_interval)
        # The mode goes under the worker id the tasks know (HIVEMIND_WORKER_ID), not Celery's node name.
        self.gate = PauseGate(PrefsStore(client, settings), registry, capacity, cpu.percent,
                              consumers=consumers_switch(parent, queues), disk_gate=disk_gate,
                              mode_id=settings.worker_id)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(settings.prefs_check_interval,),
                                        name="hivemind-prefs", daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                if self.gate is not None:
                    self.gate.check()
            except Exception:  # noqa: BLE001 - Redis briefly gone: check again next round
                log.warning("preferences check failed", exc_info=True)

    def stop(self, parent: Any) -> None:
        self._stop.set()
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
