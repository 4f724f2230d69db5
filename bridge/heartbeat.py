"""Tell the Node Pool this site exists and whether it can take work.

RegisterWorkerNode with the site's total capacity, the same figures every
time (see capacity.py: the deployed pool keeps its own reservations and clamps
them to each registration), every registration interval as a liveness
refresh, and at once when the totals grow (a worker came); they never shrink
while the bridge runs, and nothing is registered before a worker is live.
ReportStatus every heartbeat interval with status exactly "Idle" while
another task fits, and at once (`wake`) after a task was accepted (the
deployed pool marks a node BUSY after every dispatch until its next Idle
report) and after a task ended. Node-level usage goes as TaskUsage with
task_id "0" and the node id in its `token` field, where the deployed pool
reads it, when it changed or a registration interval after the last one (an
idle site's usage does not change: no call each beat); that call is optional
and its failure never fails a beat.
While the owner's preferences pause the site (site/prefs.py) the status is
"Paused: <reason>", never "Idle", and the registration stays as it was.
"""

from __future__ import annotations

import logging
import threading
import time

import grpc

from bridge import capacity
from bridge.config import BridgeConfig
from bridge.parts import BridgeParts, SiteCapacityView
from bridge.retry import TRANSIENT, until_stopped
from bridge.session import NodePoolError, Session
from hivemind_celery.site import PrefsStore, publish_standing
from proto import nodepool_pb2 as pb

log = logging.getLogger(__name__)

NODE_USAGE_TASK_ID = "0"


class Heartbeat:
    def __init__(self, parts: BridgeParts, session: Session, port: int) -> None:
        self._settings = parts.settings
        self._config = parts.config
        self._session = session
        self._registry = parts.registry
        self._redis = parts.redis
        self._outbox = parts.outbox
        self._port = port
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_registration = 0.0
        self._advertised: capacity.Advertised | None = None  # what the last registration said
        self.last_status: str | None = None
        self._usage_failure: str | None = None  # the last node-usage failure, logged once
        self._usage_sent: tuple[capacity.SiteUsage, float] | None = None  # what node usage went last, and when
        self._waiting_logged = False  # said once that registration waits for a live worker

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

    def readdress(self, config: BridgeConfig) -> None:
        """The bridge's address changed (its tunnel came back with another): register it now."""
        self._config = config
        self._next_registration = 0.0
        self.wake()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def figures(self, cap: SiteCapacityView) -> capacity.Advertised:
        """What to register now: the site's totals, never below the last registration."""
        return capacity.never_less(
            self._advertised, capacity.advertised(cap, self._settings.cpu_score_per_core, self._settings.gpu_score_per_gpu)
        )

    def register(self, cap: SiteCapacityView | None = None) -> None:
        cap = cap if cap is not None else self._registry.capacity()
        ad = self.figures(cap)
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
        log.info(
            "registered with the Node Pool as %s:%d (%d cores, cpu_score %d, gpu_score %d)",
            self._config.advertise_host,
            self._port,
            ad.cpu_cores,
            ad.cpu_score,
            ad.gpu_score,
            extra={"node_id": self._config.node_id},
        )

    def report(self, cap: SiteCapacityView | None = None) -> str:
        cap = cap if cap is not None else self._registry.capacity()
        running = self._outbox.count()
        status = capacity.node_status(cap, running)
        mode = PrefsStore(self._redis, self._settings).mode()  # what the workers published (site/prefs.py)
        if mode.paused:
            status = capacity.paused_status(mode.reason, running)
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
        self._node_usage(usage)
        if status != self.last_status:
            log.info("status now %r", status, extra={"node_id": self._config.node_id})
        self.last_status = status
        publish_standing(self._redis, self._config.node_id, self._settings.nodepool_address, status=status)
        return status

    def _node_usage(self, usage: capacity.SiteUsage) -> None:
        """Optional: a pool that refuses or fails it still got the status."""
        now = time.monotonic()
        if self._usage_sent is not None:
            last, at = self._usage_sent
            if last == usage and now - at < self._settings.registration_interval:
                return
        try:
            self._session.call(
                self._session.workers.TaskUsage,
                pb.TaskUsageRequest(
                    task_id=NODE_USAGE_TASK_ID,
                    cpu_usage=usage.cpu,
                    memory_usage=usage.memory,
                    gpu_usage=usage.gpu,
                    gpu_memory_usage=usage.gpu_memory,
                ),
                token_field=self._config.node_id,
            )
        except TRANSIENT as exc:
            detail = exc.code() if isinstance(exc, grpc.RpcError) and hasattr(exc, "code") else exc
            text = str(detail)
            if text != self._usage_failure:  # once per distinct answer, not every beat
                log.warning(
                    "node usage not taken by the Node Pool (%s); status reports go on",
                    text,
                    extra={"node_id": self._config.node_id},
                )
            self._usage_failure = text
            return
        if self._usage_failure is not None:
            log.info("node usage taken again", extra={"node_id": self._config.node_id})
        self._usage_failure = None
        self._usage_sent = (usage, now)

    def beat(self) -> None:
        try:
            cap = self._registry.capacity()
            if cap.workers == 0 and self._advertised is None:
                self._report_unregistered(cap)
                return
            # Totals only: allocations never change the registration.
            changed = self._advertised != self.figures(cap)
            if changed or time.monotonic() >= self._next_registration:
                self.register(cap)
                self._next_registration = time.monotonic() + self._settings.registration_interval
            self.report(cap)
        except Exception as exc:
            # The pool may have restarted and forgotten this node: register first next time.
            self._next_registration = 0.0
            publish_standing(
                self._redis, self._config.node_id, self._settings.nodepool_address, error=f"{type(exc).__name__}: {exc}"
            )
            raise

    def _report_unregistered(self, cap: SiteCapacityView) -> None:
        """No live worker and nothing registered yet (a bridge starting before its
        workers): registering zeros would clamp the deployed pool's available_* to
        nothing for good, so only the status goes, to a pool that knows this node.
        A pool that does not know it yet hears from the site once a worker is live."""
        try:
            self.report(cap)
        except NodePoolError as exc:
            if not self._waiting_logged:
                log.info(
                    "no live worker yet: registering once one is up (the pool says: %s)",
                    exc,
                    extra={"node_id": self._config.node_id},
                )
            self._waiting_logged = True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                # A wake (a task accepted or ended) cuts a retry wait short too.
                for attempt in until_stopped(self._stop, "heartbeat", self._config.node_id, wake=self._wake):
                    with attempt:
                        self.beat()
            except TRANSIENT:
                break  # only when stopping
            except Exception:  # noqa: BLE001 - a bug must not end the heartbeat
                log.exception("heartbeat failed", extra={"node_id": self._config.node_id})
            self._wake.wait(self._settings.heartbeat_interval)
            self._wake.clear()
