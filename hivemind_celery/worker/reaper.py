"""Reaping leftover task containers from the worker's main process: at start,
at stop and every minute.

With prefork, `revoke(terminate=True)` and the hard time limit kill the pool
child before its `finally` runs, so a task's container would outlive it. The
main process survives both; celery_app connects these hooks and adds the step.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps
from celery.worker import state as worker_state

from hivemind_celery.core.settings import get_settings

log = logging.getLogger(__name__)

REAP_INTERVAL = 60.0


def runtime() -> Any:
    # Imported lazily: the Docker client is only needed inside a worker.
    from hivemind_celery.runtime import get_runtime

    return get_runtime(get_settings())


def active_task_ids() -> set[str]:
    return {request.id for request in worker_state.active_requests}


def reap(keep: set[str] | None = None) -> int:
    try:
        removed = runtime().reap(keep if keep is not None else set())
    except Exception:  # noqa: BLE001 - reaping is best effort; the next round retries
        log.exception("reaping leftover containers failed")
        return 0
    if removed:
        log.warning("removed %d leftover task container(s)", removed)
    return removed


def reap_at_start(**_: object) -> None:
    """worker_init: nothing runs yet, so everything labelled with this worker is a leftover."""
    reap(set())


def reap_at_stop(**_: object) -> None:
    """worker_shutdown."""
    reap(set())


class PeriodicReaper(bootsteps.StartStopStep):
    """Every minute, remove this worker's containers whose task is not active
    (for example after a hard time limit killed the pool child)."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self._timer_entry = None

    def start(self, worker) -> None:
        self._timer_entry = worker.timer.call_repeatedly(REAP_INTERVAL, lambda: reap(active_task_ids()), priority=10)

    def stop(self, worker) -> None:
        if self._timer_entry is not None:
            self._timer_entry.cancel()
