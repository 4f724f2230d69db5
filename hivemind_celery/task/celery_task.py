"""The one Celery task: `hivemind.run_task` (celery_app registers `run_task`
under that name, with `RunTask` as its base).

It takes `TaskSpec.model_dump(mode="json")` and returns the TaskOutcome as
JSON when it succeeded; any other outcome is stored first (outcome key, result
zip) and then raised as TaskUnsuccessful carrying the same JSON, so Celery,
Flower and `celery events` show FAILURE (`outcomes.outcome_of` reads either). A task always ends with an outcome
and a stored result zip, even when its input was bad: the Node Pool must get
an answer for every task it handed over. The run itself is run.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from celery import Task
from celery.exceptions import Reject
from pydantic import ValidationError

from hivemind_celery.core.model import TaskOutcome, TaskSpec, TaskStatus
from hivemind_celery.core.settings import get_settings
from hivemind_celery.payloads.store import PayloadStore
from hivemind_celery.task.outcomes import TaskUnsuccessful, rejected_outcome
from hivemind_celery.task.resume import TaskRequeued
from hivemind_celery.task.run import redis_client, run_guarded, runtime

log = logging.getLogger(__name__)


def spec_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "spec"
    return f"invalid task spec: {field}: {first['msg']}"


# What a run left to do once its outcome is delivered (run.run_guarded), by task id.
_after_result: dict[str, Callable[[], None]] = {}


class RunTask(Task):
    """Settles a run after its outcome is stored: Celery calls after_return once
    the result is in the backend, so the submitter has the outcome without
    waiting for the run's records to be cleared, its history entry, its lock's
    release, or dockerd removing its containers and volumes. A pool process
    killed before this leaves the records and the lock to their expiry, the
    containers to the worker's reaper."""

    # An expected end, logged by Celery at INFO without a traceback.
    throws = (TaskUnsuccessful,)

    def after_return(self, status, retval, task_id, args, kwargs, einfo) -> None:  # type: ignore[no-untyped-def]
        if not task_id:
            return
        settle = _after_result.pop(task_id, None)
        if settle is not None:
            try:
                settle()
            except Exception:  # noqa: BLE001 - Redis gone: the lock and records expire by themselves
                log.warning("could not settle the task's records; they expire", exc_info=True, extra={"task_id": task_id})
        try:
            runtime().cleanup(task_id)
        except Exception:  # noqa: BLE001 - e.g. dockerd gone: the worker's reaper removes them later
            log.warning("could not remove the task's containers now; the reaper will", exc_info=True, extra={"task_id": task_id})


def run_task(self: Task, spec_json: dict[str, Any]) -> dict[str, Any]:
    """The task body: check the message, then run the spec at most once."""
    settings = get_settings()
    task_id = self.request.id or str(spec_json.get("task_id", "unknown"))
    store = PayloadStore(redis_client(), settings)
    try:
        spec = TaskSpec.model_validate(spec_json)
    except ValidationError as exc:
        # The id may itself be what is invalid: never build keys from it.
        return _answer(rejected_outcome("invalid", spec_error(exc), settings.worker_id))
    if spec.task_id != task_id:
        return _answer(rejected_outcome(spec.task_id, "spec task_id differs from the Celery task id", settings.worker_id))
    try:
        return _answer(run_guarded(self, spec, store, settings, partial(_after_result.__setitem__, spec.task_id)))
    except TaskRequeued as exc:
        # Celery skips after_return for a rejected message: remove the run's leftovers here.
        self.after_return("REJECTED", None, spec.task_id, (), {}, None)
        raise Reject(str(exc), requeue=True) from None


def _answer(outcome: TaskOutcome) -> dict[str, Any]:
    data = outcome.model_dump(mode="json")
    if outcome.status is not TaskStatus.SUCCEEDED:
        raise TaskUnsuccessful(data)
    return data
