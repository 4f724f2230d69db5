"""Carry what the workers produce back to the Node Pool, for every task the
bridge owes: new output (TaskOutputUpload), the latest usage sample
(TaskUsage), and, once the Celery task is done, the result zip
(TaskResultUpload). Only after the pool acknowledged the result is the task
struck from the outbox. Its registry reservation goes as soon as the task has
ended (nothing of it runs any more), before the upload: the heartbeat tells
the pool about the room while the result travels.

A pass runs every HIVEMIND_RELAY_INTERVAL seconds, and at once when a worker
stores a task state: Celery's Redis result backend publishes each stored
state on a channel named after its key, which the relay watches (polling
alone remains when the backend is not Redis or the watch fails). While the
watch works, passes that find no new output and no result space out, up to
QUIET_PASSES_APART relay intervals apart: a silent task costs the lender one
pass per stored usage sample (each wakes a pass and sends it), not one a second.

State lives in Redis (outbox + output cursors), so a restarted bridge picks
up where the last one stopped; output may be re-sent from the last cursor and
a result may be sent twice (at least once; the pool deduplicates).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import redis
from celery.result import AsyncResult

from bridge.outbox import OwedTask
from bridge.parts import BridgeParts
from bridge.retry import TRANSIENT, until_stopped
from bridge.session import CALL_TIMEOUT, NodePoolError, Session
from hivemind_celery.core import TaskOutcome, keys
from hivemind_celery.payloads import PayloadMissing
from hivemind_celery.task import finished_outcome, read_output
from proto import nodepool_pb2 as pb

log = logging.getLogger(__name__)

# Stream entries per TaskOutputUpload: a worker flushes at most ~64 KB per
# entry, so a batch stays far below gRPC's default 4 MB message limit.
OUTPUT_BATCH_ENTRIES = 16
RESULT_TIMEOUT = 120.0
# How long an idle relay (nothing owed) sleeps before looking again, unwoken.
IDLE_RELAY_WAIT = 30.0
# While tasks are owed but passes find nothing new, the wait between them doubles up
# to this many relay intervals (a stored state still wakes a pass at once).
QUIET_PASSES_APART = 5
# A pool that keeps refusing a result (it no longer knows the task) is given
# up on after this many passes, so one task cannot hold the site forever.
MAX_RESULT_REFUSALS = 5


class Relay:
    def __init__(self, parts: BridgeParts, session: Session) -> None:
        self._settings = parts.settings
        self._session = session
        self._redis = parts.redis
        self._celery = parts.celery
        self._registry = parts.registry
        self._payloads = parts.payloads
        self._outbox = parts.outbox
        self._last_usage: dict[str, bytes | str] = {}
        self._undeliverable: set[str] = set()
        self._refusals: dict[str, int] = {}
        self._freed: set[str] = set()  # finished tasks whose room was announced
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._owed = 1  # until the first pass has looked
        self._moved = 0  # output batches and results sent so far (usage comes with a wake anyway)
        self._quiet_wait = parts.settings.relay_interval
        self._thread: threading.Thread | None = None
        # Called when a finished task's room was freed (the heartbeat's wake).
        self.on_freed: Callable[[], None] | None = None
        self._watch: Any = None  # the thread watching stored task states

    def start(self) -> None:
        self._watch = self._watch_results()
        self._thread = threading.Thread(target=self._run, name="bridge-relay", daemon=True)
        self._thread.start()

    def _watch_results(self) -> Any:
        """Wake a pass whenever the result backend publishes a stored task state."""
        backend = self._celery.backend
        client = getattr(backend, "client", None)
        prefix = getattr(backend, "task_keyprefix", None)
        if not isinstance(client, redis.Redis) or not prefix:
            return None
        pattern = (prefix.decode() if isinstance(prefix, bytes) else str(prefix)) + "*"

        def on_error(exc: BaseException, _pubsub: Any, _thread: Any) -> None:
            log.debug("result watch: %s; polling meanwhile", exc, extra={"node_id": self._outbox.node_id})
            self._stop.wait(1.0)  # the pubsub reconnects and subscribes again on its next read

        try:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            pubsub.psubscribe(**{pattern: lambda _message: self._wake.set()})
            # A message ends the wait at once; the timeout only paces an idle thread.
            return pubsub.run_in_thread(sleep_time=IDLE_RELAY_WAIT, daemon=True, exception_handler=on_error)
        except redis.RedisError as exc:
            log.warning(
                "cannot watch stored results (%s); relaying every %g s",
                exc,
                self._settings.relay_interval,
                extra={"node_id": self._outbox.node_id},
            )
            return None

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._watch is not None:
            self._watch.stop()
        if self._thread is not None:
            self._thread.join(timeout=RESULT_TIMEOUT + 10)

    def _run(self) -> None:
        node_id = self._outbox.node_id
        while not self._stop.is_set():
            moved = self._moved
            try:
                for attempt in until_stopped(self._stop, "relay", node_id):
                    with attempt:
                        self.relay_once()
            except TRANSIENT:
                break  # only when stopping
            except Exception:  # noqa: BLE001 - a bug must not end the relay
                log.exception("relay pass failed", extra={"node_id": node_id})
            self._wake.wait(self._next_wait(self._moved != moved))
            self._wake.clear()

    def _next_wait(self, moved: bool) -> float:
        interval = self._settings.relay_interval
        if not self._owed:
            # Nothing owed: nothing to relay until a task is accepted (intake wakes
            # this) or a result is stored (the watch wakes it).
            return IDLE_RELAY_WAIT
        if moved or self._watch is None:
            self._quiet_wait = interval
        else:
            self._quiet_wait = min(self._quiet_wait * 2, interval * QUIET_PASSES_APART)
        return self._quiet_wait

    # -- one pass ---------------------------------------------------------------
    def relay_once(self) -> int:
        """Relay everything owed once; returns how many results were delivered.
        A transient failure (pool or Redis down) propagates so the loop backs off."""
        delivered = 0
        owed = [(task, self._finished(task.task_id)) for task in self._outbox.all()]
        self._owed = len(owed)
        # Finished tasks first, and their room announced before anything is
        # sent: the pool can dispatch the next task while results travel.
        owed.sort(key=lambda pair: pair[1] is None)
        for task, outcome in owed:
            if outcome is not None:
                self._room_freed(task.task_id)
        for task, outcome in owed:
            if self._stop.is_set():
                break
            if self._relay_task(task, outcome):
                delivered += 1
        return delivered

    def _room_freed(self, task_id: str) -> None:
        """A task has ended: nothing of it runs any more, whatever becomes of its
        upload. Its reservation goes (the worker has usually given it back
        already) and the heartbeat tells the pool, once per task."""
        if task_id in self._freed:
            return
        self._freed.add(task_id)
        self._registry.release(task_id)
        if self.on_freed is not None:
            self.on_freed()

    def _relay_task(self, task: OwedTask, outcome: TaskOutcome | None) -> bool:
        """Relay one task. The pool refusing one upload (success=false) is
        logged and does not hold up the others; the pool or Redis being down
        propagates so the whole pass backs off."""
        try:
            self._send_output(task.task_id)
            if outcome is None:
                self._send_usage(task)
                return False
        except NodePoolError as exc:
            log.warning("Node Pool refused output/usage: %s", exc, extra=self._extra(task.task_id))
        if outcome is None:
            return False
        try:
            return self._deliver(task, outcome)
        except NodePoolError as exc:
            return self._refused(task, str(exc))

    # -- output and usage -----------------------------------------------------
    def _send_output(self, task_id: str) -> None:
        cursor = self._outbox.cursor(task_id)
        while True:
            last, data = read_output(self._redis, task_id, after=cursor, count=OUTPUT_BATCH_ENTRIES)
            if not data:
                if last != cursor:  # entries without data: just move past them
                    self._outbox.advance(task_id, last)
                return
            # Decode per batch with replacement: the pool's field is a string and
            # a task may print anything.
            text = data.decode("utf-8", errors="replace")
            try:
                self._session.call(
                    self._session.workers.TaskOutputUpload,
                    pb.TaskOutputUploadRequest(task_id=task_id, output=text),
                )
            except NodePoolError:
                # Not retried: the pool would refuse the same bytes again.
                self._outbox.advance(task_id, last)
                raise
            self._outbox.advance(task_id, last)
            self._moved += 1
            cursor = last
            log.debug("sent %d bytes of output", len(data), extra=self._extra(task_id))

    def _send_usage(self, task: OwedTask) -> None:
        task_id = task.task_id
        raw = self._redis.get(keys.task_usage(task_id))
        if raw is None or self._last_usage.get(task_id) == raw:
            return
        sample = usage_sample(raw, task.gpu_memory_mb)
        if sample is None:
            log.warning("unreadable usage sample", extra=self._extra(task_id))
            self._last_usage[task_id] = raw
            return
        self._session.call(self._session.workers.TaskUsage, pb.TaskUsageRequest(task_id=task_id, **sample))
        self._last_usage[task_id] = raw

    # -- result -------------------------------------------------------------
    def _finished(self, task_id: str) -> TaskOutcome | None:
        """The task's outcome once it is done; None while it is not."""
        result = AsyncResult(task_id, app=self._celery)
        if not result.ready():
            return None
        # Returned or raised by the task, or stored for it when it was revoked or killed.
        outcome = finished_outcome(self._redis, task_id, result.result)
        if outcome is not None:
            return outcome
        self._stuck(task_id, f"task ended {result.state} without an outcome ({result.result!r})")
        return None

    def _stuck(self, task_id: str, reason: str) -> None:
        """A finished task with no result zip to send. The bridge does not make
        one up: it logs once, frees the task's room and keeps it owed."""
        if task_id in self._undeliverable:
            return
        self._undeliverable.add(task_id)
        log.error("cannot deliver a result: %s", reason, extra=self._extra(task_id))
        self._registry.release(task_id)

    def _refused(self, task: OwedTask, message: str) -> bool:
        count = self._refusals.get(task.task_id, 0) + 1
        self._refusals[task.task_id] = count
        extra = self._extra(task.task_id)
        if count < MAX_RESULT_REFUSALS:
            log.warning("Node Pool refused the result (%d/%d): %s", count, MAX_RESULT_REFUSALS, message, extra=extra)
            return False
        log.error("Node Pool refused the result %d times (%s); giving it up", count, message, extra=extra)
        self._forget(task.task_id)
        return False

    def _forget(self, task_id: str) -> None:
        """Only for finished tasks: _room_freed has already released their room."""
        self._outbox.remove(task_id)
        self._last_usage.pop(task_id, None)
        self._refusals.pop(task_id, None)
        self._undeliverable.discard(task_id)
        self._freed.discard(task_id)
        self._redis.delete(keys.task_output(task_id), keys.task_usage(task_id))

    def _deliver(self, task: OwedTask, outcome: TaskOutcome) -> bool:
        extra = self._extra(task.task_id)
        if outcome.result_ref is None:
            self._stuck(task.task_id, f"the {outcome.status.value} outcome names no result zip")
            return False
        try:
            zip_bytes = self._payloads.get(outcome.result_ref)
        except PayloadMissing as exc:
            self._stuck(task.task_id, str(exc))
            return False
        self._session.call(
            self._session.workers.TaskResultUpload,
            pb.TaskResultUploadRequest(task_id=task.task_id, result_zip=zip_bytes),
            timeout=max(CALL_TIMEOUT, RESULT_TIMEOUT),
        )
        # Acknowledged: the pool has it. Forget the task.
        self._forget(task.task_id)
        self._moved += 1
        log.info("delivered the result (%s, %d bytes)", outcome.status.value, len(zip_bytes), extra=extra)
        return True

    def _extra(self, task_id: str) -> dict[str, str]:
        return {"task_id": task_id, "node_id": self._outbox.node_id}

    def wake(self) -> None:
        """Run a pass now (after a task was accepted, or in tests)."""
        self._wake.set()


def usage_sample(raw: bytes | str, gpu_memory_mb: int = 0) -> dict[str, Any] | None:
    """The worker's latest usage sample JSON (sampler.UsageSample) -> TaskUsage
    percent fields. GPU memory comes in bytes: its share of what the task reserved."""
    try:
        data = json.loads(raw)
    except (ValueError, TypeError):
        return None
    if not isinstance(data, dict):
        return None
    fields = {
        "cpu_usage": ("cpu_percent", "cpu_usage"),
        "memory_usage": ("memory_percent", "memory_usage"),
        "gpu_usage": ("gpu_percent", "gpu_usage"),
        "gpu_memory_usage": ("gpu_memory_percent", "gpu_memory_usage"),
    }
    sample: dict[str, float] = {}
    for field, names in fields.items():
        value = next((data[name] for name in names if isinstance(data.get(name), int | float)), 0.0)
        sample[field] = float(value)
    gpu_bytes = data.get("gpu_memory_bytes")
    if not sample["gpu_memory_usage"] and gpu_memory_mb > 0 and isinstance(gpu_bytes, int | float):
        sample["gpu_memory_usage"] = min(100.0, 100.0 * gpu_bytes / (gpu_memory_mb * 1024 * 1024))
    return sample
