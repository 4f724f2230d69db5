"""What the worker's main process does around tasks: reap leftover
containers at start, stop and on a timer, and clean up after revoke.

With prefork, `revoke(terminate=True)` and the hard time limit kill the pool
child before its `finally` runs, so a task's container would outlive it.
These handlers run in the main process, which survives both.
"""

from __future__ import annotations

import logging
import threading

from celery import bootsteps, signals
from celery.worker import state as worker_state

from hivemind_celery.celery_app import app
from hivemind_celery.observability.logs import configure_logging
from hivemind_celery.core.settings import get_settings

log = logging.getLogger(__name__)

REAP_INTERVAL = 60.0


def _runtime():
    # Imported lazily: the Docker client is only needed inside a worker.
    from hivemind_celery.runtime import get_runtime

    return get_runtime(get_settings())


def active_task_ids() -> set[str]:
    return {request.id for request in worker_state.active_requests}


def reap(keep: set[str] | None = None) -> int:
    try:
        removed = _runtime().reap(keep if keep is not None else set())
    except Exception:  # noqa: BLE001 - reaping is best effort; the next round retries
        log.exception("reaping leftover containers failed")
        return 0
    if removed:
        log.warning("removed %d leftover task container(s)", removed)
    return removed


@signals.setup_logging.connect
def _setup_logging(loglevel: str | int | None = None, **_: object) -> None:
    settings = get_settings()
    # HIVEMIND_LOG_LEVEL, when set, wins over celery's -l option.
    configure_logging(settings, None if "log_level" in settings.model_fields_set else loglevel)


@signals.worker_init.connect
def _reap_at_start(**_: object) -> None:
    # Nothing runs yet: everything labelled with this worker is a leftover.
    reap(set())


@signals.worker_shutdown.connect
def _reap_at_stop(**_: object) -> None:
    reap(set())


@signals.task_revoked.connect
def _cleanup_revoked(request=None, terminated: bool = False, **_: object) -> None:
    if request is None or not terminated:
        return
    task_id = request.id
    # Do not block the main loop on the Docker API.
    threading.Thread(target=_kill_and_record, args=(task_id,), name=f"revoke-{task_id}",
                     daemon=True).start()


def _kill_and_record(task_id: str) -> None:
    from hivemind_celery.task.cancellation import record_terminated

    try:
        killed = _runtime().kill(task_id)
        log.info("revoked task: removed %d container(s)", killed, extra={"task_id": task_id})
    except Exception:  # noqa: BLE001
        log.exception("could not remove the revoked task's containers", extra={"task_id": task_id})
    record_terminated(task_id)


class PeriodicReaper(bootsteps.StartStopStep):
    """Every minute, remove this worker's containers whose task is not active
    (for example after a hard time limit killed the pool child)."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self._timer_entry = None

    def start(self, worker) -> None:
        self._timer_entry = worker.timer.call_repeatedly(
            REAP_INTERVAL, lambda: reap(active_task_ids()), priority=10
        )

    def stop(self, worker) -> None:
        if self._timer_entry is not None:
            self._timer_entry.cancel()


app.steps["worker"].add(PeriodicReaper)
