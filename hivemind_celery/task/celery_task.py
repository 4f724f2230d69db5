"""The one Celery task: `hivemind.run_task`.

It takes `TaskSpec.model_dump(mode="json")` and returns the TaskOutcome as
JSON (Flower shows it on the task page). A task always ends with an outcome
and a stored result zip, even when its input was bad: the Node Pool must get
an answer for every task it handed over.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache
from typing import Any

import redis
from celery import Task
from pydantic import ValidationError

from hivemind_celery.core import keys
from hivemind_celery.celery_app import app
from hivemind_celery.task.job import (
    TaskRejected,
    outcome_from_result,
    prepare_job,
    rejected_outcome,
    store_result,
)
from hivemind_celery.task.idempotency import TaskGuard
from hivemind_celery.core.model import TaskOutcome, TaskSpec, TaskStatus
from hivemind_celery.payloads.store import PayloadStore
from hivemind_celery.runtime import get_runtime
from hivemind_celery.runtime.base import Runtime, RuntimeRefused
from hivemind_celery.core.settings import Settings, get_settings
from hivemind_celery.task.streams import OutputStream
from hivemind_celery.task.meter import TaskUsageTracker

log = logging.getLogger(__name__)

TASK_NAME = "hivemind.run_task"


@lru_cache(maxsize=1)
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(get_settings().payload_redis)


@lru_cache(maxsize=1)
def runtime() -> Runtime:
    # One runtime (and Docker client) per pool process, reused across tasks.
    return get_runtime(get_settings())


def spec_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "spec"
    return f"invalid task spec: {field}: {first['msg']}"


class RunTask(Task):
    """Removes a run's containers and volumes after its outcome is stored:
    Celery calls after_return once the result is in the backend, so the
    submitter has the outcome without waiting for dockerd to remove them. A
    pool process killed before this leaves them to the worker's reaper."""

    def after_return(self, status, retval, task_id, args, kwargs, einfo) -> None:  # type: ignore[no-untyped-def]
        if not task_id:
            return
        try:
            runtime().cleanup(task_id)
        except Exception:  # noqa: BLE001 - e.g. dockerd gone: the worker's reaper removes them later
            log.warning("could not remove the task's containers now; the reaper will", exc_info=True,
                        extra={"task_id": task_id})


@app.task(name=TASK_NAME, bind=True, base=RunTask)
def run_task(self: Task, spec_json: dict[str, Any]) -> dict[str, Any]:
    settings = get_settings()
    task_id = self.request.id or str(spec_json.get("task_id", "unknown"))
    store = PayloadStore(redis_client(), settings)
    try:
        spec = TaskSpec.model_validate(spec_json)
    except ValidationError as exc:
        # The id may itself be what is invalid: never build keys from it.
        outcome = rejected_outcome("invalid", spec_error(exc), settings.worker_id)
        return outcome.model_dump(mode="json")
    if spec.task_id != task_id:
        outcome = rejected_outcome(spec.task_id, "spec task_id differs from the Celery task id",
                                   settings.worker_id)
        return outcome.model_dump(mode="json")
    return run_once(self, spec, store, settings).model_dump(mode="json")


def run_once(task: Task, spec: TaskSpec, store: PayloadStore, settings: Settings) -> TaskOutcome:
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
            outcome = execute(task, spec, store, settings)
        guard.store_outcome(outcome)
        return outcome
    finally:
        guard.release()


def execute(task: Task, spec: TaskSpec, store: PayloadStore, settings: Settings) -> TaskOutcome:
    client = redis_client()
    log.info("task starting", extra={"task_id": spec.task_id, "queue": spec.queue.value})

    def should_stop() -> bool:
        return bool(client.exists(keys.task_stop(spec.task_id)))

    if should_stop():
        outcome = rejected_outcome(spec.task_id, "stopped before it started", settings.worker_id)
        outcome = outcome.model_copy(update={"status": TaskStatus.CANCELLED})
        return store_result(outcome, store, settings, stopped=True)
    try:
        job = prepare_job(spec, store, settings)
    except TaskRejected as exc:
        log.warning("task rejected: %s", exc, extra={"task_id": spec.task_id})
        return store_result(rejected_outcome(spec.task_id, str(exc), settings.worker_id), store, settings)

    output = OutputStream(client, spec.task_id)
    usage = TaskUsageTracker(task, spec, client, settings)  # samples from on_start; reward in complete()
    try:
        result = runtime().run(job, on_output=output.write, on_start=usage.on_start, should_stop=should_stop,
                               defer_cleanup=True)
    except RuntimeRefused as exc:
        log.warning("task refused by the runtime: %s", exc, extra={"task_id": spec.task_id})
        return store_result(rejected_outcome(spec.task_id, str(exc), settings.worker_id), store, settings)
    except Exception as exc:  # noqa: BLE001 - any runtime fault must still end in an outcome
        log.exception("runtime failed", extra={"task_id": spec.task_id})
        outcome = rejected_outcome(spec.task_id, f"runtime error: {exc}", settings.worker_id)
        outcome = outcome.model_copy(update={"status": TaskStatus.FAILED})
        return store_result(outcome, store, settings)
    finally:
        output.flush()
        usage.stop()
    outcome = usage.complete(outcome_from_result(spec, result, settings.worker_id))
    log.info("task finished: %s", outcome.status.value,
             extra={"task_id": spec.task_id, "status": outcome.status.value})
    return store_result(outcome, store, settings, result.workspace_tar, stopped=result.stopped,
                        notes=result.workspace_notes)
