"""Saving a running task's checkpoint directory (docs/checkpoints.md).

A `Checkpointer` is an observer of the run: when the main step starts it
reads the directory every HIVEMIND_CHECKPOINT_INTERVAL seconds and saves it
when its bytes changed (payloads/checkpoint.py: packed, capped, stored, the
pointer swapped once stored whole); `finish` saves the directory as the run
left it (after the task's SIGTERM grace on a stop). A refused checkpoint
(a link, a device, over the cap) keeps the previous one; the reason goes to
the task's output once per distinct reason and into the attempt's notes, once
it was seen twice in a row: a directory read while the task writes (a file
renamed away under the copy, a new state beside the old one) is refused once
and tried again RETRY_SECONDS later, quietly.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis

from hivemind_celery.core.settings import Settings
from hivemind_celery.payloads.checkpoint import CheckpointRefused, CheckpointStore, pack
from hivemind_celery.payloads.store import digest_of
from hivemind_celery.runtime.archive import WorkspaceCopy
from hivemind_celery.runtime.base import Started
from hivemind_celery.task.attempts import AttemptLog
from hivemind_celery.task.observers import TaskObserver, TaskRun

log = logging.getLogger(__name__)

RETRY_SECONDS = 2.0  # after a refused read, before the next try


class Checkpointer(TaskObserver):
    def __init__(
        self,
        task_id: str,
        store: CheckpointStore,
        settings: Settings,
        attempts: AttemptLog,
        say: Callable[[str], None],
        saved_digest: str | None = None,
    ) -> None:
        self.task_id = task_id
        self.store = store
        self.settings = settings
        self.attempts = attempts
        self.say = say  # a line for the task's output (relayed to the pool)
        self._last = saved_digest  # what is stored now (the restored checkpoint, if any)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._told: set[str] = set()
        self._refusal = ""  # the last read's refusal, if it was refused
        self.saved = 0

    def on_start(self, run: TaskRun, started: Started) -> None:
        reader = started.read_checkpoint
        if reader is None:
            return
        self._thread = threading.Thread(target=self._loop, args=(reader,), name=f"checkpoint-{self.task_id}", daemon=True)
        self._thread.start()

    def _loop(self, reader: Callable[[], WorkspaceCopy | None]) -> None:
        interval = self.settings.checkpoint_interval
        while not self._stop.wait(min(interval, RETRY_SECONDS) if self._refusal else interval):
            try:
                self.capture(reader())
            except Exception:  # noqa: BLE001 - a failed save leaves the previous one; the next try may work
                log.exception("checkpoint capture failed", extra={"task_id": self.task_id})

    def finish(self, copy: WorkspaceCopy | None) -> None:
        """Stop the periodic saves, then save the directory as the run left it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.docker_timeout + 60)
        try:
            self.capture(copy, last=True)
        except Exception:  # noqa: BLE001
            log.exception("last checkpoint capture failed", extra={"task_id": self.task_id})

    def capture(self, copy: WorkspaceCopy | None, last: bool = False) -> bool:
        """Save `copy` when it differs from what is stored; True when saved."""
        if copy is None:
            return False
        with self._lock:
            try:
                data = pack(copy.tar, copy.skipped, self.settings.checkpoint_max_bytes)
            except CheckpointRefused as exc:
                self._refused(str(exc), last)
                return False
            self._refusal = ""
            if data is None or digest_of(data) == self._last:
                return False
            attempt = self.attempts.current.number if self.attempts.current else 0
            try:
                pointer = self.store.save(self.task_id, data, attempt, self.settings.worker_id)
            except CheckpointRefused as exc:
                self._refused(str(exc), True)
                return False
            except redis.RedisError as exc:
                log.warning("checkpoint not stored: %s", exc, extra={"task_id": self.task_id})
                return False
            self._last = pointer.digest
            self.saved += 1
            self.attempts.update(checkpoints_saved=self.saved, saved_progress=pointer.progress)
            log.info("checkpoint saved (%d bytes, progress %s)", pointer.size, pointer.progress, extra={"task_id": self.task_id})
            return True

    def _refused(self, reason: str, last: bool) -> None:
        again, self._refusal = reason == self._refusal, reason
        if not (again or last):
            log.info("%s; trying again in %g s", reason, RETRY_SECONDS, extra={"task_id": self.task_id})
            return
        log.warning("%s", reason, extra={"task_id": self.task_id})
        if reason not in self._told:
            self._told.add(reason)
            self.say(reason)
            self.attempts.note(reason)
