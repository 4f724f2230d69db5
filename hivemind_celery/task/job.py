"""From a validated TaskSpec to a Job the runtime can run, or TaskRejected
saying why not. No Celery here."""

from __future__ import annotations

import logging

from hivemind_celery.core.errors import HivemindError
from hivemind_celery.core.model import TaskSpec
from hivemind_celery.core.settings import Settings
from hivemind_celery.payloads import workspace
from hivemind_celery.payloads.checkpoint import CHECKPOINT_DIR
from hivemind_celery.payloads.store import PayloadError, PayloadStore
from hivemind_celery.runtime.base import Job

log = logging.getLogger(__name__)


class TaskRejected(HivemindError):
    """The task cannot run as asked; the message says why, for the submitter."""


def prepare_job(
    spec: TaskSpec, store: PayloadStore, settings: Settings, checkpoint: tuple[bytes, workspace.ZipManifest] | None = None
) -> Job:
    """Fetch and check everything a run needs; raise TaskRejected otherwise.
    The workspace gets the (empty, or restored: `checkpoint`, already checked)
    checkpoint directory."""
    image = spec.image or settings.task_image
    if not settings.image_allowed(image):
        raise TaskRejected(f"image '{image}' is not in this site's allowed images")
    if spec.network.value != "none" and not settings.allow_network:
        raise TaskRejected("the task asks for network access, which this site does not allow")
    timeout = spec.timeout or settings.default_timeout
    if timeout > settings.max_timeout:
        raise TaskRejected(f"timeout {timeout:.0f}s is above this site's maximum of {settings.max_timeout:.0f}s")
    if spec.cpus > settings.max_cpus:
        raise TaskRejected(f"cpus {spec.cpus} is above this site's maximum of {settings.max_cpus}")
    if spec.memory_mb > settings.max_memory_mb:
        raise TaskRejected(f"memory_mb {spec.memory_mb} is above this site's maximum of {settings.max_memory_mb}")
    try:
        data = store.get(spec.payload)
    except PayloadError as exc:
        raise TaskRejected(str(exc)) from exc
    try:
        manifest = workspace.inspect_zip(data, workspace.ZipLimits.from_settings(settings))
        command = list(spec.command) if spec.command else workspace.entry_command(manifest)
        setup = workspace.setup_command(manifest)
    except workspace.WorkspaceError as exc:
        raise TaskRejected(f"invalid task zip: {exc}") from exc
    saved, saved_manifest = checkpoint or (None, None)
    try:
        tar = workspace.zip_to_tar(data, manifest, extra=[(CHECKPOINT_DIR, saved, saved_manifest)])
    except workspace.WorkspaceError as exc:  # the task zip, or a checkpoint whose entries lie
        raise TaskRejected(f"invalid task zip or checkpoint: {exc}") from exc
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
