"""A GPU task's devices as each runtime hands them over: Docker's DeviceRequest
by UUID, and CUDA_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES in the process runtime.

There is no GPU (nor NVIDIA's container toolkit) on the test machine. Docker
still records a container's DeviceRequests at create, so they are read back
with `docker inspect`; starting such a container fails here, and the runtime
must end the task with a reason that says so. The UUIDs are the stand-in
GPUs' (tests/usage/gpu_standin.py)."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from hivemind_celery.core.model import TaskSpec, TaskStatus
from hivemind_celery.core.settings import Settings
from hivemind_celery.payloads import workspace
from hivemind_celery.runtime.base import Job
from hivemind_celery.runtime.docker_config import LABEL_TASK, container_kwargs, label_filters
from hivemind_celery.runtime.docker_driver import DockerRuntime
from hivemind_celery.runtime.process import ProcessRuntime
from tests.services_kit import BUSYBOX_IMAGE, PYTHON_IMAGE, make_zip
from tests.usage.gpu_standin import UUIDS

WORKER = f"test-gpu-{uuid.uuid4().hex[:8]}"
PAYLOAD = "sha256:" + "0" * 64
PRINT_DEVICES = (
    "import os\n"
    "print('CUDA=' + repr(os.environ.get('CUDA_VISIBLE_DEVICES')))\n"
    "print('NVIDIA=' + repr(os.environ.get('NVIDIA_VISIBLE_DEVICES')))\n"
)


def settings(**changes: object) -> Settings:
    fields: dict = dict(worker_id=WORKER, task_image=PYTHON_IMAGE, allowed_images=[BUSYBOX_IMAGE], stop_grace=1, tmpfs_size="16m")
    fields.update(changes)
    return Settings(**fields)


def make_job(files: dict[str, str], image: str, gpu_devices: tuple[str, ...], **spec: object) -> Job:
    data = make_zip(files)
    manifest = workspace.inspect_zip(data)
    task_spec = TaskSpec(task_id=f"t-{uuid.uuid4().hex[:10]}", payload=PAYLOAD, **{"memory_mb": 128, "cpus": 0.5, **spec})
    return Job(
        spec=task_spec,
        image=image,
        command=workspace.entry_command(manifest),
        workspace_tar=workspace.zip_to_tar(data, manifest),
        timeout=20,
        setup_command=workspace.setup_command(manifest),
        gpu_devices=gpu_devices,
    )


def test_device_request_names_the_held_gpus_and_the_setup_step_gets_none() -> None:
    job = make_job({"main.py": "", "requirements.txt": "six\n"}, BUSYBOX_IMAGE, (UUIDS[2],), gpus=1)
    [request] = container_kwargs(job, settings(), "main", "ws", "deps", 2)["device_requests"]
    assert request["DeviceIDs"] == [UUIDS[2]] and request["Capabilities"] == [["gpu"]]
    assert not request.get("Count")  # by id, never "the first N"
    assert "device_requests" not in container_kwargs(job, settings(), "setup", "ws", "deps", 2)


@pytest.mark.docker
def test_docker_records_the_device_ids_it_was_created_with(docker_client) -> None:
    job = make_job({"main.py": ""}, BUSYBOX_IMAGE, (UUIDS[1], UUIDS[3]), gpus=2)
    kwargs = container_kwargs(job, settings(), "main", f"ws-{job.spec.task_id}", None, 2)
    kwargs["mounts"] = []  # no volume needed to read the create back
    container = docker_client.containers.create(**kwargs)
    try:
        [recorded] = docker_client.api.inspect_container(container.id)["HostConfig"]["DeviceRequests"]
    finally:
        container.remove(force=True)
    assert recorded["DeviceIDs"] == [UUIDS[1], UUIDS[3]]
    assert recorded["Capabilities"] == [["gpu"]] and recorded["Count"] == 0


@pytest.mark.docker
def test_a_gpu_container_docker_cannot_start_fails_with_the_reason_and_leaves_nothing(docker_client) -> None:
    runtime = DockerRuntime(settings(), client=docker_client)
    job = make_job({"main.py": "print('never')\n"}, BUSYBOX_IMAGE, (UUIDS[0],), gpus=1)
    job = dataclasses.replace(job, command=["sh", "-c", "echo never"])
    result = runtime.run(job)
    assert result.status is TaskStatus.FAILED
    assert "docker refused the task" in result.reason
    # What Docker recorded on the container, read back before it was removed:
    assert f"DeviceIDs ['{UUIDS[0]}']" in result.reason and "container toolkit" in result.reason
    left = docker_client.containers.list(all=True, filters={"label": f"{LABEL_TASK}={job.spec.task_id}"})
    assert left == [] and docker_client.volumes.list(filters=label_filters(WORKER, job.spec.task_id)) == []


def run_process(tmp_path, gpu_devices: tuple[str, ...], **spec: object) -> str:  # noqa: ANN001
    runtime = ProcessRuntime(settings(runtime="process", runtime_dir=str(tmp_path / "rt")))
    job = make_job({"main.py": PRINT_DEVICES}, "unused", gpu_devices, **spec)
    result = runtime.run(job)
    assert result.status is TaskStatus.SUCCEEDED, result.reason
    return result.log_tail


def test_process_runtime_shows_the_task_only_its_gpus(tmp_path) -> None:  # noqa: ANN001
    held = run_process(tmp_path, (UUIDS[1], UUIDS[2]), gpus=2)
    assert f"CUDA='{UUIDS[1]},{UUIDS[2]}'" in held and f"NVIDIA='{UUIDS[1]},{UUIDS[2]}'" in held


def test_process_runtime_cpu_task_and_the_tasks_own_variable_see_no_gpu(tmp_path) -> None:  # noqa: ANN001
    cpu = run_process(tmp_path, (), env={"CUDA_VISIBLE_DEVICES": "0,1,2,3"})
    assert "CUDA=''" in cpu and "NVIDIA=''" in cpu
