"""One run of a validated task spec, in two steps named for what they do:

- `run_guarded`: at most once per task id (the task guard): a stored outcome
  is returned as it is, a run elsewhere is waited for, and a task redelivered
  past HIVEMIND_MAX_ATTEMPTS gives up;
- `run_job`: the run itself: stop check, the Job, the runtime with the task's
  output streamed and its usage metered (observers see start, samples and
  finish), the outcome and its stored result zip.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from functools import lru_cache
from typing import Any

import redis

from hivemind_celery.core import keys
from hivemind_celery.core.model import TaskOutcome, TaskSpec
from hivemind_celery.core.redis_client import payload_redis
from hivemind_celery.core.settings import Settings, get_settings
from hivemind_celery.payloads.store import PayloadStore
from hivemind_celery.runtime import get_runtime
from hivemind_celery.runtime.base import Runtime, RuntimeRefused
from hivemind_celery.site.activity import Activity
from hivemind_celery.site.gpu_allocator import GpuRefused
from hivemind_celery.site.prefs import worker_paused
from hivemind_celery.task.gpus import GpuHold
from hivemind_celery.task.idempotency import TaskGuard
from hivemind_celery.task.job import TaskRejected, prepare_job
from hivemind_celery.task.meter import UsageMeter
from hivemind_celery.task.outcomes import (
    cancelled_outcome,
    failed_outcome,
    outcome_from_result,
    rejected_outcome,
)
from hivemind_celery.task.result import store_result
from hivemind_celery.task.streams import OutputStream

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def redis_client() -> redis.Redis:
    return payload_redis(get_settings())


@lru_cache(maxsize=1)
def runtime() -> Runtime:
    # One runtime (and Docker client) per pool process, reused across tasks.
    return get_runtime(get_settings())


def note_ended(client: redis.Redis, outcome: TaskOutcome) -> None:
    """The console's history and CPT earned (site/activity.py); never fails the task."""
    try:
        Activity(client).finished(outcome.task_id, outcome.reward or 0)
    except redis.RedisError:
        log.warning("could not add the task to the site's history", extra={"task_id": outcome.task_id})


def run_guarded(task: Any, spec: TaskSpec, store: PayloadStore, settings: Settings) -> TaskOutcome:
    guard = TaskGuard(redis_client(), spec.task_id, lock_ttl=max(3, int(settings.task_lock_ttl)))
    existing = guard.stored_outcome()
    if existing is not None:
        log.info("task already ran; returning its outcome", extra={"task_id": spec.task_id})
        return existing
    deadline = time.monotonic() + settings.hard_time_limit
    while not guard.acquire():
        log.info("task is running elsewhere; waiting for its outcome", extra={"task_id": spec.task_id})
        outcome = guard.wait_for_outcome(deadline)
        if outcome is not None:
            return outcome
        if time.monotonic() >= deadline:
            return rejected_outcome(spec.task_id, "another run of this task never finished",
                                    settings.worker_id)
    try:
        attempts = guard.count_attempt()
        if attempts > settings.max_attempts:
            outcome = rejected_outcome(
                spec.task_id,
                f"task was started {attempts - 1} times and never finished (worker lost); giving up",
                settings.worker_id,
            )
            outcome = store_result(outcome, store, settings)
        else:
            outcome = run_job(task, spec, store, settings)
        guard.store_outcome(outcome)
        note_ended(redis_client(), outcome)
        return outcome
    finally:
        guard.release()


def run_job(task: Any, spec: TaskSpec, store: PayloadStore, settings: Settings) -> TaskOutcome:
    client = redis_client()
    log.info("task starting", extra={"task_id": spec.task_id, "queue": spec.queue.value})

    def should_stop() -> bool:
        return bool(client.exists(keys.task_stop(spec.task_id)))

    def should_freeze() -> bool:  # the worker's preferences step decides (worker/prefs.py)
        return worker_paused(client, settings.worker_id)

    if should_stop():
        outcome = cancelled_outcome(spec.task_id, "stopped before it started", settings.worker_id)
        return store_result(outcome, store, settings, stopped=True)
    try:
        job = prepare_job(spec, store, settings)
    except TaskRejected as exc:
        log.warning("task rejected: %s", exc, extra={"task_id": spec.task_id})
        return store_result(rejected_outcome(spec.task_id, str(exc), settings.worker_id), store, settings)

    # A GPU task's GPUs, held from before its first container to its end (task/gpus.py).
    gpus = GpuHold(spec, client, settings)
    try:
        gpus.acquire(should_stop)
    except GpuRefused as exc:
        log.warning("task refused: %s", exc, extra={"task_id": spec.task_id})
        return store_result(rejected_outcome(spec.task_id, str(exc), settings.worker_id), store, settings)
    if spec.wants_gpu and not gpus.gpus:
        outcome = cancelled_outcome(spec.task_id, "stopped while waiting for a GPU", settings.worker_id)
        return store_result(outcome, store, settings, stopped=True)
    job = dataclasses.replace(job, gpu_devices=gpus.uuids)
    output = OutputStream(client, spec.task_id)
    meter = UsageMeter(task, spec, client, settings)  # samples from on_start; reward in complete()
    try:
        result = runtime().run(job, on_output=output.write, on_start=meter.on_start, should_stop=should_stop,
                               defer_cleanup=True, should_freeze=should_freeze)
    except RuntimeRefused as exc:
        log.warning("task refused by the runtime: %s", exc, extra={"task_id": spec.task_id})
        return store_result(rejected_outcome(spec.task_id, str(exc), settings.worker_id), store, settings)
    except Exception as exc:  # noqa: BLE001 - any runtime fault must still end in an outcome
        log.exception("runtime failed", extra={"task_id": spec.task_id})
        outcome = failed_outcome(spec.task_id, f"runtime error: {exc}", settings.worker_id)
        return store_result(outcome.model_copy(update={"gpus": gpus.used()}), store, settings)
    finally:
        gpus.release()
        output.flush()
        meter.stop()
    outcome = meter.complete(outcome_from_result(spec, result, settings.worker_id))
    outcome = outcome.model_copy(update={"gpus": gpus.used()})
    log.info("task finished: %s", outcome.status.value,
             extra={"task_id": spec.task_id, "status": outcome.status.value})
    return store_result(outcome, store, settings, result.workspace_tar, stopped=result.stopped,
                        notes=result.workspace_notes)
