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
from collections.abc import Callable
from functools import lru_cache, partial
from typing import Any

import redis

from hivemind_celery.core import keys
from hivemind_celery.core.model import TaskOutcome, TaskSpec
from hivemind_celery.core.redis_client import payload_redis
from hivemind_celery.core.reward import RewardPolicy
from hivemind_celery.core.settings import Settings, get_settings
from hivemind_celery.payloads.checkpoint import CheckpointStore
from hivemind_celery.payloads.store import PayloadStore
from hivemind_celery.runtime import get_runtime
from hivemind_celery.runtime.base import Runtime, RuntimeRefused
from hivemind_celery.site.activity import Activity
from hivemind_celery.site.gpu_allocator import GpuRefused
from hivemind_celery.task.attempts import AttemptLog, AttemptObserver, with_attempts
from hivemind_celery.task.checkpointer import Checkpointer
from hivemind_celery.task.gpus import GpuHold
from hivemind_celery.task.idempotency import TaskGuard
from hivemind_celery.task.job import TaskRejected, prepare_job
from hivemind_celery.task.meter import UsageMeter
from hivemind_celery.task.observers import default_observers
from hivemind_celery.task.outcomes import (
    cancelled_outcome,
    failed_outcome,
    outcome_from_result,
    rejected_outcome,
)
from hivemind_celery.task.result import store_result
from hivemind_celery.task.resume import PauseRelease, Restored, TaskRequeued, draining, restore, resumed_line
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


def _say(output: OutputStream, line: str) -> None:
    output.write(f"[hivemind] {line}\n".encode())


def run_guarded(
    task: Any,
    spec: TaskSpec,
    store: PayloadStore,
    settings: Settings,
    after_result: Callable[[Callable[[], None]], None] | None = None,
) -> TaskOutcome:
    """The outcome of the task's one run. Once the outcome is stored, what is
    left (forget the checkpoint, add the history entry, release the lock) is
    done at once, or handed to `after_result` to do after the caller has
    delivered the outcome (celery_task: after Celery stored the result)."""
    guard = TaskGuard(redis_client(), spec.task_id, lock_ttl=max(3, int(settings.task_lock_ttl)))
    deadline = time.monotonic() + settings.hard_time_limit
    while not (claim := guard.claim()).attempt:
        if claim.outcome is not None:
            log.info("task already ran; returning its outcome", extra={"task_id": spec.task_id})
            return claim.outcome
        log.info("task is running elsewhere; waiting for its outcome", extra={"task_id": spec.task_id})
        outcome = guard.wait_for_outcome(deadline)
        if outcome is not None:
            return outcome
        if time.monotonic() >= deadline:
            return rejected_outcome(spec.task_id, "another run of this task never finished", settings.worker_id)
    handed_over = False  # the lock's release went with the rest of the settling
    try:
        attempts = claim.attempt
        if attempts > settings.max_attempts:
            outcome = rejected_outcome(
                spec.task_id,
                f"task was started {attempts - 1} times and never finished (worker lost); giving up",
                settings.worker_id,
            )
            outcome = store_result(outcome, store, settings)
        else:
            outcome = run_job(task, spec, store, settings)
        # Stored first: a delivery of the same task from now on gets this outcome,
        # whether or not the lock is still held.
        guard.store_outcome(outcome)
        settle = partial(_settle, guard, outcome, settings)
        handed_over = True  # _settle releases the lock, whatever else fails
        if after_result is None:
            settle()
        else:
            after_result(settle)
        return outcome
    except TaskRequeued:
        guard.uncount_attempt()  # a graceful stop is not a lost worker: it does not use up the attempts
        raise
    finally:
        if not handed_over:
            guard.release()


def _settle(guard: TaskGuard, outcome: TaskOutcome, settings: Settings) -> None:
    """After the outcome: the run's records go, the history gains it, the lock is released."""
    try:
        forget_progress(redis_client(), outcome.task_id, settings)
        note_ended(redis_client(), outcome)
    finally:
        guard.release()


def forget_progress(client: redis.Redis, task_id: str, settings: Settings) -> None:
    """The task has its outcome: its checkpoint and attempt records go (the outcome lists the attempts)."""
    try:
        CheckpointStore(client, settings).clear(task_id, AttemptLog(client, task_id).key)
    except redis.RedisError:
        log.warning("could not remove the task's checkpoint; it expires", extra={"task_id": task_id})


def run_job(task: Any, spec: TaskSpec, store: PayloadStore, settings: Settings) -> TaskOutcome:
    client = redis_client()
    log.info("task starting", extra={"task_id": spec.task_id, "queue": spec.queue.value})

    pause = PauseRelease(client, settings)  # freezes while the worker is paused (worker/prefs.py)

    def should_stop() -> bool:  # asked to stop; or this worker stops, or a long pause: to resume later
        return bool(client.exists(keys.task_stop(spec.task_id), keys.worker_draining(settings.worker_id))) or pause.due()

    def stop_grace() -> float:  # time to write a last checkpoint when the task is to resume
        later = pause.released or draining(client, settings.worker_id)
        return settings.shutdown_grace if later else settings.stop_grace

    asked = client.pipeline(transaction=False)  # both asked in one round trip
    asked.exists(keys.task_stop(spec.task_id))
    asked.exists(keys.worker_draining(settings.worker_id))
    stop_asked, worker_stopping = asked.execute()
    if stop_asked:
        outcome = cancelled_outcome(spec.task_id, "stopped before it started", settings.worker_id)
        return store_result(outcome, store, settings, stopped=True)
    if worker_stopping:
        raise TaskRequeued("this worker is stopping; the task goes back to its queue before it started")
    checkpoints = CheckpointStore(client, settings)
    restored = restore(checkpoints, spec.task_id, settings)
    saved = (restored.data, restored.manifest) if restored.data and restored.manifest else None
    try:
        try:
            job = prepare_job(spec, store, settings, saved)
        except TaskRejected as exc:
            if saved is None:
                raise
            # The checkpoint's entries lied about their contents: start from the beginning without it.
            restored = Restored(refused=f"checkpoint refused: {exc}; starting from the beginning")
            job = prepare_job(spec, store, settings, None)
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
        if draining(client, settings.worker_id):
            raise TaskRequeued("this worker is stopping; the task goes back to its queue before it started")
        outcome = cancelled_outcome(spec.task_id, "stopped while waiting for a GPU", settings.worker_id)
        return store_result(outcome, store, settings, stopped=True)
    job = dataclasses.replace(job, gpu_devices=gpus.uuids)
    output = OutputStream(client, spec.task_id)
    attempts = AttemptLog(client, spec.task_id)
    attempt = attempts.begin(settings.worker_id, restored.pointer)
    # Every start is recorded before its first container: only a later attempt can find leftovers.
    job = dataclasses.replace(job, first_attempt=attempt.number == 1)
    say = partial(_say, output)
    if line := resumed_line(restored, attempt.number, settings.worker_id):
        say(line)
    if restored.refused:
        attempts.note(restored.refused)
    policy = RewardPolicy.from_settings(settings)
    checkpointer = Checkpointer(
        spec.task_id, checkpoints, settings, attempts, say, restored.pointer.digest if restored.pointer else None
    )
    observers = [*default_observers(), AttemptObserver(attempts, policy), checkpointer]
    meter = UsageMeter(task, spec, client, settings, observers=observers)  # samples from on_start
    try:
        result = runtime().run(
            job,
            on_output=output.write,
            on_start=meter.on_start,
            should_stop=should_stop,
            defer_cleanup=True,
            should_freeze=pause.paused,
            stop_grace=stop_grace,
        )
    except RuntimeRefused as exc:
        log.warning("task refused by the runtime: %s", exc, extra={"task_id": spec.task_id})
        return store_result(rejected_outcome(spec.task_id, str(exc), settings.worker_id), store, settings)
    except Exception as exc:  # noqa: BLE001 - any runtime fault must still end in an outcome
        log.exception("runtime failed", extra={"task_id": spec.task_id})
        outcome = failed_outcome(spec.task_id, f"runtime error: {exc}", settings.worker_id)
        return store_result(outcome.model_copy(update={"gpus": gpus.used()}), store, settings)
    finally:
        gpus.release()
        meter.stop()
    later = result.stopped and not client.exists(keys.task_stop(spec.task_id))
    requeue = later and draining(client, settings.worker_id)
    release = later and not requeue and pause.released
    checkpointer.finish(result.checkpoint if requeue or release else None)
    if requeue or release:
        measured = meter.measure(outcome_from_result(spec, result, settings.worker_id), policy)
        attempts.end("requeued" if requeue else "released", measured)
        meter.requeued()
        why = (
            "the worker is stopping"
            if requeue
            else f"the owner's pause passed {pause.after_minutes:g} min: its memory is released"
        )
        say(
            f"attempt {attempt.number} on {settings.worker_id}: {why}; {checkpointer.saved} checkpoint(s) "
            "saved; the task goes back to its queue to resume"
        )
        output.flush()
        raise TaskRequeued(f"worker {settings.worker_id}: {why}")
    output.flush()

    def with_all_attempts(outcome: TaskOutcome) -> TaskOutcome:
        attempts.end("finished", outcome)
        return with_attempts(outcome, attempts.with_earlier())

    outcome = meter.complete(outcome_from_result(spec, result, settings.worker_id), policy, with_all_attempts)
    outcome = outcome.model_copy(update={"gpus": gpus.used()})
    log.info("task finished: %s", outcome.status.value, extra={"task_id": spec.task_id, "status": outcome.status.value})
    return store_result(outcome, store, settings, result.workspace_tar, stopped=result.stopped, notes=result.workspace_notes)
