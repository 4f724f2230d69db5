"""Tell the Node Pool this site exists and whether it can take work.

RegisterWorkerNode every registration interval (liveness and fresh capacity),
and at once on the next beat whenever the capacity to advertise changed: the
pool learns capacity only from registrations and forgets its own reservations
at every ReportStatus, so a stale registration would let it send a task that no
longer fits (or leave freed room unused until the next interval).
ReportStatus every heartbeat interval (and at once after a finished task
freed room, see `wake`) with status exactly "Idle" only while another task
fits, and node-level usage as TaskUsage with task_id "0".
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from bridge import capacity
from bridge.config import BridgeConfig
from bridge.outbox import Outbox
from bridge.retry import TRANSIENT, until_stopped
from bridge.session import Session
from hivemind_celery.settings import Settings
from proto import nodepool_pb2 as pb

log = logging.getLogger(__name__)

NODE_USAGE_TASK_ID = "0"


class Heartbeat:
    def __init__(
        self,
        settings: Settings,
        config: BridgeConfig,
        session: Session,
        registry: Any,
        outbox: Outbox,
        port: int,
    ) -> None:
        self._settings = settings
        self._config = config
        self._session = session
        self._registry = registry
        self._outbox = outbox
        self._port = port
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_registration = 0.0
        self._advertised: capacity.Advertised | None = None  # what the last registration said
        self.last_status: str | None = None

    @property
    def docker_status(self) -> str:
        # The deployed pool puts "disabled" nodes in its low-trust group: say so
        # honestly when tasks run without container isolation.
        return "enabled" if self._settings.runtime == "docker" else "disabled"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bridge-heartbeat", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Beat now (the relay calls this after a task's room was freed)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def register(self, cap: Any = None) -> None:
        cap = cap if cap is not None else self._registry.capacity()
        ad = capacity.advertised(cap, self._settings.cpu_score_per_core, self._settings.gpu_score_per_gpu)
        self._session.call(
            self._session.nodes.RegisterWorkerNode,
            pb.RegisterWorkerNodeRequest(
                node_id=self._config.node_id,
                hostname=self._config.advertise_host,
                port=self._port,
                cpu_cores=ad.cpu_cores,
                memory_gb=ad.memory_gb,
                cpu_score=ad.cpu_score,
                gpu_score=ad.gpu_score,
                gpu_memory_gb=ad.gpu_memory_gb,
                gpu_name=ad.gpu_name,
                location=self._settings.location,
                docker_status=self.docker_status,
            ),
        )
        self._advertised = ad
        log.info("registered with the Node Pool as %s:%d (%d cores, cpu_score %d, gpu_score %d)",
                 self._config.advertise_host, self._port, ad.cpu_cores, ad.cpu_score, ad.gpu_score,
                 extra={"node_id": self._config.node_id})

    def report(self, cap: Any = None) -> str:
        cap = cap if cap is not None else self._registry.capacity()
        running = self._outbox.count()
        status = capacity.node_status(cap, running)
        usage = capacity.site_usage(cap)
        self._session.call(
            self._session.nodes.ReportStatus,
            pb.RunningStatusRequest(
                node_id=self._config.node_id,
                status=status,
                cpu_usage=usage.cpu,
                memory_usage=usage.memory,
                gpu_usage=usage.gpu,
                gpu_memory_usage=usage.gpu_memory,
                docker_status=self.docker_status,
                running_tasks=running,
            ),
        )
        self._session.call(
            self._session.workers.TaskUsage,
            pb.TaskUsageRequest(
                task_id=NODE_USAGE_TASK_ID,
                cpu_usage=usage.cpu,
                memory_usage=usage.memory,
                gpu_usage=usage.gpu,
                gpu_memory_usage=usage.gpu_memory,
            ),
        )
        if status != self.last_status:
            log.info("status now %r", status, extra={"node_id": self._config.node_id})
        self.last_status = status
        return status

    def beat(self) -> None:
        try:
            cap = self._registry.capacity()
            changed = self._advertised != capacity.advertised(
                cap, self._settings.cpu_score_per_core, self._settings.gpu_score_per_gpu)
            if changed or time.monotonic() >= self._next_registration:
                self.register(cap)
                self._next_registration = time.monotonic() + self._settings.registration_interval
            self.report(cap)
        except Exception:
            # The pool may have restarted and forgotten this node: register first next time.
            self._next_registration = 0.0
            raise

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for attempt in until_stopped(self._stop, "heartbeat", self._config.node_id):
                    with attempt:
                        self.beat()
            except TRANSIENT:
                break  # only when stopping
            except Exception:  # noqa: BLE001 - a bug must not end the heartbeat
                log.exception("heartbeat failed", extra={"node_id": self._config.node_id})
            self._wake.wait(self._settings.heartbeat_interval)
            self._wake.clear()
