"""Stopping tasks.

Two ways in:
- `request_stop` (the bridge's StopTaskExecution, `hivemind stop`): sets a
  flag the running task polls; the task stops its container, packs the
  partial workspace with task_stopped.txt and ends `cancelled`. A task still
  queued sees the flag when it starts and ends at once.
- `revoke(task_id, terminate=True)` (an operator): Celery kills the pool child;
  the worker's main process removes the container and records a `cancelled`
  outcome here, so the result is still delivered.
"""

from __future__ import annotations

import logging

import redis

from hivemind_celery.core import keys
from hivemind_celery.core.redis_client import payload_redis
from hivemind_celery.core.settings import get_settings
from hivemind_celery.payloads.store import PayloadStore
from hivemind_celery.site.activity import Activity
from hivemind_celery.task.idempotency import OUTCOME_TTL, TaskGuard
from hivemind_celery.task.outcomes import cancelled_outcome
from hivemind_celery.task.result import store_result

log = logging.getLogger(__name__)


def request_stop(client: redis.Redis, task_id: str) -> None:
    client.set(keys.task_stop(task_id), b"1", ex=OUTCOME_TTL)


def record_terminated(task_id: str) -> None:
    """Store a `cancelled` outcome for a task whose process was killed,
    unless it managed to store one itself."""
    settings = get_settings()
    client = payload_redis(settings)
    guard = TaskGuard(client, task_id)
    if guard.stored_outcome() is not None:
        return
    outcome = cancelled_outcome(task_id, "terminated by revoke", settings.worker_id)
    outcome = store_result(outcome, PayloadStore(client, settings), settings, stopped=True)
    guard.store_outcome(outcome)
    try:
        Activity(client).finished(task_id)
    except redis.RedisError:
        log.warning("could not add the task to the site's history", extra={"task_id": task_id})
    # The killed run never released its lock; nobody else holds it now.
    client.delete(keys.task_lock(task_id))
    log.info("recorded the terminated task as cancelled", extra={"task_id": task_id})
