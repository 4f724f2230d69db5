"""From a validated TaskSpec to a Job, and from a JobResult to a stored
outcome with its result zip. No Celery here: tasks.py is the glue."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from hivemind_celery.payloads import resultzip, workspace
from hivemind_celery.core.model import TaskOutcome, TaskSpec, TaskStatus
from hivemind_celery.payloads.store import PayloadError, PayloadStore, PayloadTooLarge
from hivemind_celery.runtime.base import Job, JobResult
from hivemind_celery.core.settings import Settings

log = logging.getLogger(__name__)


class TaskRejected(Exception):
    """The task cannot run as asked; the message says why, for the submitter."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def prepare_job(spec: TaskSpec, store: PayloadStore, settings: Settings) -> Job:
    """Fetch and check everything a run needs; raise TaskRejected otherwise."""
    image = spec.image or settings.task_image
    if not settings.image_allowed(image):
        raise TaskRejected(f"image '{image}' is not in this site's allowed images")
    if spec.network.value != "none" and not settings.allow_network:
        raise TaskRejected("the task asks for network access, which this site does not allow")
    timeout = spec.timeout or settings.default_timeout
    if timeout > settings.max_timeout:
        raise TaskRejected(
            f"timeout {timeout:.0f}s is above this site's maximum of {settings.max_timeout:.0f}s"
        )
    if spec.cpus > settings.max_cpus:
        raise TaskRejected(f"cpus {spec.cpus} is above this site's maximum of {settings.max_cpus}")
    if spec.memory_mb > settings.max_memory_mb:
        raise TaskRejected(
            f"memory_mb {spec.memory_mb} is above this site's maximum of {settings.max_memory_mb}"
        )
    try:
        data = store.get(spec.payload)
    except PayloadError as exc:
        raise TaskRejected(str(exc)) from exc
    try:
        manifest = workspace.inspect_zip(data, workspace.ZipLimits.from_settings(settings))
        command = list(spec.command) if spec.command else workspace.entry_command(manifest)
        setup = workspace.setup_command(manifest)
        tar = workspace.zip_to_tar(data, manifest)
    except workspace.WorkspaceError as exc:
        raise TaskRejected(f"invalid task zip: {exc}") from exc
    return Job(
        spec=spec,
        image=image,
        command=command,
        workspace_tar=tar,
        timeout=timeout,
        setup_command=setup,
        network=spec.network.value != "none",
        setup_network=settings.setup_network,
        pids=spec.pids or settings.pids_limit,
        labels={"hivemind.owner": spec.owner or ""},
    )


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


def rejected_outcome(task_id: str, reason: str, worker: str) -> TaskOutcome:
    now = utcnow()
    return TaskOutcome(
        task_id=task_id,
        status=TaskStatus.REJECTED,
        started_at=now,
        finished_at=now,
        reason=reason,
        worker=worker,
    )


def store_result(
    outcome: TaskOutcome,
    store: PayloadStore,
    settings: Settings,
    workspace_tar: bytes | None = None,
    stopped: bool = False,
    notes: list[str] | None = None,
) -> TaskOutcome:
    """Pack the result zip, store it, and return the outcome pointing at it.

    A workspace too large to store is dropped from the zip (the report says
    so) rather than losing the whole result."""
    limit = min(settings.result_max_bytes, settings.payload_max_bytes)
    data = resultzip.build_result_zip(
        workspace_tar, outcome, node=settings.worker_id, stopped=stopped, max_bytes=limit, notes=notes or ()
    )
    try:
        ref = store.put(data)
    except PayloadTooLarge:
        log.warning("result zip too large; storing it without the workspace",
                    extra={"task_id": outcome.task_id})
        note = (outcome.reason + "; " if outcome.reason else "") + "workspace too large to return"
        outcome = outcome.model_copy(update={"reason": note})
        ref = store.put(
            resultzip.build_result_zip(None, outcome, node=settings.worker_id, stopped=stopped,
                                       max_bytes=limit, notes=notes or ())
        )
    return outcome.model_copy(update={"result_ref": ref})
