"""Where a run starts from, and whether it should stop to resume later.

`restore` gives the task's last saved checkpoint, checked (payloads/
checkpoint.py), for a fresh workspace; one that is refused (changed in
storage, breaking the zip rules, expired) is left out with its reason and the
task starts from the beginning, which is the truthful thing to do with it.
`PauseRelease` does the same when the owner's pause outlasts their
release_memory_after_minutes (BOINC's "leave tasks in memory while suspended" = no).
`draining` tells whether this worker is stopping gracefully (worker/
draining.py sets the key on Celery's warm shutdown): its tasks then write a
last checkpoint and go back to their queue (`TaskRequeued`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import redis

from hivemind_celery.core import keys
from hivemind_celery.core.errors import HivemindError
from hivemind_celery.core.settings import Settings
from hivemind_celery.payloads.checkpoint import (
    CheckpointPointer,
    CheckpointRefused,
    CheckpointStore,
    restorable,
)
from hivemind_celery.payloads.workspace import ZipManifest
from hivemind_celery.site.prefs import PrefsStore, worker_paused

log = logging.getLogger(__name__)


class TaskRequeued(HivemindError):
    """The run stopped to resume later; its message goes back to the queue."""


@dataclass(frozen=True)
class Restored:
    pointer: CheckpointPointer | None = None
    data: bytes | None = None
    manifest: ZipManifest | None = None
    refused: str = ""  # why a stored checkpoint was not restored


def restore(store: CheckpointStore, task_id: str, settings: Settings) -> Restored:
    try:
        loaded = store.load(task_id)
        if loaded is None:
            return Restored()
        pointer, data = loaded
        return Restored(pointer, data, restorable(data, settings))
    except CheckpointRefused as exc:
        log.warning("%s; the task starts from the beginning", exc, extra={"task_id": task_id})
        return Restored(refused=f"{exc}; starting from the beginning")
    except redis.RedisError as exc:
        log.warning("could not read the task's checkpoint: %s", exc, extra={"task_id": task_id})
        return Restored(refused=f"checkpoint unreadable ({exc}); starting from the beginning")


def resumed_line(restored: Restored, attempt: int, worker: str) -> str:
    """What the task's output (relayed to the pool) says about this start."""
    pointer = restored.pointer
    if pointer is None:
        return f"attempt {attempt} on {worker}: {restored.refused}" if restored.refused else ""
    saved = datetime.fromtimestamp(pointer.saved_at, UTC).isoformat(timespec="seconds")
    progress = f", progress {pointer.progress:.0%}" if pointer.progress is not None else ""
    return (
        f"attempt {attempt} on {worker}: resumed from the checkpoint saved at {saved} by attempt "
        f"{pointer.attempt} on {pointer.worker}{progress}"
    )


def draining(client: redis.Redis, worker_id: str) -> bool:
    return bool(client.exists(keys.worker_draining(worker_id)))


class PauseRelease:
    """The owner's pause, seen by one run: `paused` is the run's freeze check;
    `due` turns true once the pause has lasted the owner's
    release_memory_after_minutes (read when the pause begins), and the run then
    stops, checkpointed, to resume when the site runs again."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.since: float | None = None
        self.after_minutes: float | None = None
        self.released = False

    def paused(self) -> bool:
        paused = worker_paused(self.client, self.settings.worker_id)
        if paused and self.since is None:
            self.since = time.monotonic()
            self.after_minutes = PrefsStore(self.client, self.settings).load().release_memory_after_minutes
        elif not paused:
            self.since = None
        return paused

    def due(self) -> bool:
        if not self.released and self.since is not None and self.after_minutes is not None:
            self.released = time.monotonic() - self.since >= self.after_minutes * 60
        return self.released
