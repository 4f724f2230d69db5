"""Wiring of rescue.py into the worker: every task's delivery is recorded
while the worker holds it (main process), and a timer in the main process hands the tasks
of dead workers back to their queues. At start a worker also hands back what
its own previous run left (same name, restarted after a crash): nothing of
that run is running any more. celery_app connects the hooks and adds the step."""

from __future__ import annotations

import functools
import logging
from typing import Any

import redis
from celery import bootsteps
from celery.worker import state as worker_state

from hivemind_celery.core.redis_client import payload_redis
from hivemind_celery.core.settings import get_settings
from hivemind_celery.site import rescue
from hivemind_celery.site.registry import Registry

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _registry() -> Registry:
    settings = get_settings()
    return Registry(payload_redis(settings), heartbeat_interval=settings.registry_heartbeat_interval)


def record_delivery(request: Any = None, **_: object) -> None:
    # Main process, as the message arrives: the pool process never sees the
    # delivery tag. Reserved-but-not-started tasks are covered too.
    message = getattr(request, "message", None)
    tag = getattr(message, "delivery_tag", None)
    if request is None or tag is None or not request.hostname:
        return
    try:
        rescue.record(_registry(), request.hostname, request.id, str(tag))
    except redis.RedisError:
        log.warning("could not record the task's delivery", exc_info=True, extra={"task_id": request.id})


def forget_delivery(task_id: str | None = None, task: Any = None, **_: object) -> None:
    hostname = getattr(getattr(task, "request", None), "hostname", None)
    if task_id is None or not hostname:
        return
    try:
        rescue.forget(_registry().client, hostname, task_id)
    except redis.RedisError:
        log.warning("could not forget the task's delivery", exc_info=True, extra={"task_id": task_id})


def _tidy_own(worker: Any) -> None:
    """Forget deliveries this worker no longer holds (a task whose pool process
    was killed never reaches task_postrun)."""
    held = {request.id for request in worker_state.reserved_requests}
    rescue.forget_all_but(_registry().client, worker.hostname, held)


def _hand_back(worker: Any, own: bool = False) -> int:
    try:
        with worker.app.connection_for_write() as connection:
            if own:
                return rescue.rescue_own(_registry(), connection, worker.hostname)
            _tidy_own(worker)
            return rescue.rescue(_registry(), connection, worker.hostname)
    except Exception:  # noqa: BLE001 - best effort; the next round retries
        log.exception("could not hand back the tasks of dead workers")
        return 0


class RescueStep(bootsteps.StartStopStep):
    """On start and then every HIVEMIND_RESCUE_INTERVAL seconds."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._entry = None

    def start(self, worker: Any) -> None:
        _hand_back(worker, own=True)
        self._entry = worker.timer.call_repeatedly(get_settings().rescue_interval, lambda: _hand_back(worker), priority=10)

    def stop(self, worker: Any) -> None:
        if self._entry is not None:
            self._entry.cancel()
