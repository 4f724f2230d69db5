"""The outcome constructors, each named for what it makes: from a runtime's
JobResult, or at once for a task that never ran (rejected), whose runtime
broke (failed) or that was stopped before or while it ran (cancelled). And
reading one back from a Celery result (outcome_of, finished_outcome).

A process that only reads outcomes (the bridge) imports this module without
the runtime: JobResult is needed for type checking only."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import redis

from hivemind_celery.core.errors import HivemindError
from hivemind_celery.core.model import TaskOutcome, TaskSpec, TaskStatus
from hivemind_celery.task.idempotency import TaskGuard

if TYPE_CHECKING:
    from hivemind_celery.runtime.base import JobResult


def utcnow() -> datetime:
    return datetime.now(UTC)


def outcome_from_result(spec: TaskSpec, result: JobResult, worker: str) -> TaskOutcome:
    return TaskOutcome(
        task_id=spec.task_id,
        status=result.status,
        exit_code=result.exit_code,
        started_at=result.started_at,
        finished_at=result.finished_at,
        reason=result.reason,
        log_tail=result.log_tail,
        worker=worker,
        setup_usage=result.step_usage.get("setup"),
        main_usage=result.step_usage.get("main"),
    )


def _ended_now(task_id: str, status: TaskStatus, reason: str, worker: str) -> TaskOutcome:
    now = utcnow()
    return TaskOutcome(task_id=task_id, status=status, started_at=now, finished_at=now, reason=reason, worker=worker)


def rejected_outcome(task_id: str, reason: str, worker: str) -> TaskOutcome:
    """The task cannot run as asked (bad spec, zip, limits, refused by the runtime)."""
    return _ended_now(task_id, TaskStatus.REJECTED, reason, worker)


def failed_outcome(task_id: str, reason: str, worker: str) -> TaskOutcome:
    """The site broke, not the task (the runtime raised)."""
    return _ended_now(task_id, TaskStatus.FAILED, reason, worker)


def cancelled_outcome(task_id: str, reason: str, worker: str) -> TaskOutcome:
    """Stopped before it started, or its process was killed by a revoke."""
    return _ended_now(task_id, TaskStatus.CANCELLED, reason, worker)


class TaskUnsuccessful(HivemindError):
    """Raised by the Celery task for every outcome but `succeeded`, once that outcome
    and its result zip are stored: Celery then records the task as FAILURE and
    sends `task-failed`, so Flower and `celery events` tell the truth. The outcome
    JSON is the exception's one argument (kept by the result backend), so whoever
    reads the Celery result still gets it (`outcome_of`)."""

    def __init__(self, outcome: dict) -> None:
        super().__init__(outcome)
        self.outcome = outcome

    def __str__(self) -> str:
        data = self.outcome if isinstance(self.outcome, dict) else {}
        return f"{data.get('status', '?')}: {data.get('reason', '')}"

    def __repr__(self) -> str:
        # What Celery logs and Flower shows as the exception: the status and reason,
        # not the whole outcome with the task's output tail.
        return f"TaskUnsuccessful({str(self)!r})"


def outcome_of(value: object) -> TaskOutcome | None:
    """The TaskOutcome in a Celery result: the returned JSON of a succeeded task or
    the TaskUnsuccessful of another (rebuilt by Celery as that class, or as a
    stand-in of the same name in a process that never imported this module)."""
    if isinstance(value, dict):
        return TaskOutcome.model_validate(value)
    if isinstance(value, BaseException) and type(value).__name__ == TaskUnsuccessful.__name__:
        args = getattr(value, "args", ())
        if args and isinstance(args[0], dict):
            return TaskOutcome.model_validate(args[0])
    return None


def finished_outcome(client: redis.Redis, task_id: str, value: object) -> TaskOutcome | None:
    """The outcome of a task Celery reports ready, `value` being its result: the
    outcome it returned or raised; for one revoked or killed, the cancelled outcome
    the worker's main process stored for it under its outcome key; else None."""
    outcome = outcome_of(value)
    if outcome is not None:
        return outcome
    return TaskGuard(client, task_id).stored_outcome()


def celery_outcome(result: object, timeout: float) -> TaskOutcome:
    """Wait for a Celery AsyncResult and return its outcome, succeeded or not."""
    value = result.get(timeout=timeout, propagate=False)  # type: ignore[attr-defined]
    outcome = outcome_of(value)
    if outcome is None:
        raise ValueError(f"the task ended without an outcome: {value!r}")
    return outcome
