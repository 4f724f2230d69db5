"""Building Docker runtime jobs for the runtime tests: this run's worker id, its
settings, a Job from a few files, what a worker left behind, a tar's files."""

from __future__ import annotations

import io
import tarfile
import uuid

from hivemind_celery.core.model import TaskSpec
from hivemind_celery.core.settings import Settings
from hivemind_celery.payloads import workspace
from hivemind_celery.runtime.base import Job
from hivemind_celery.runtime.docker_config import label_filters
from tests.services_kit import BUSYBOX_IMAGE, PYTHON_IMAGE, make_zip

WORKER = f"test-rt-{uuid.uuid4().hex[:8]}"
PAYLOAD = "sha256:" + "0" * 64


def settings(**changes: object) -> Settings:
    fields: dict = dict(
        worker_id=WORKER,
        task_image=PYTHON_IMAGE,
        allowed_images=[BUSYBOX_IMAGE],
        stop_grace=1,
        tmpfs_size="16m",
        log_tail_bytes=64 * 1024,
    )
    fields.update(changes)
    return Settings(**fields)


def make_job(files: dict[str, str], image: str = BUSYBOX_IMAGE, timeout: float = 20, pids: int = 64, **spec: object) -> Job:
    data = make_zip(files)
    manifest = workspace.inspect_zip(data)
    task_spec = TaskSpec(
        task_id=spec.pop("task_id", f"t-{uuid.uuid4().hex[:10]}"), payload=PAYLOAD, **{"memory_mb": 128, "cpus": 0.5, **spec}
    )
    return Job(
        spec=task_spec,
        image=image,
        command=workspace.entry_command(manifest),
        workspace_tar=workspace.zip_to_tar(data, manifest),
        timeout=timeout,
        setup_command=workspace.setup_command(manifest),
        pids=pids,
    )


def leftovers(client, task_id: str | None = None) -> tuple[list, list]:
    filters = label_filters(WORKER, task_id)
    return client.containers.list(all=True, filters=filters), client.volumes.list(filters=filters)


def tar_files(data: bytes | None) -> dict[str, bytes]:
    assert data is not None
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
