"""GPU tasks through a real `celery worker` on Docker, and a worker killed
mid-task whose GPU comes back. No GPU can exist on the test machine: the
workers import the NVML stand-in (tests/usage/nvml_standin/pynvml.py) instead
of NVIDIA's driver; Redis, dockerd, the workers and the tasks are real."""

from __future__ import annotations

import signal
import time
import uuid

import psutil
import pytest

from hivemind_celery.core.model import TASK_NAME, TaskSpec, TaskStatus
from hivemind_celery.payloads.store import PayloadStore
from hivemind_celery.task.outcomes import celery_outcome
from hivemind_celery.usage.gpu import GpuInfo
from tests.services_kit import make_zip
from tests.usage.gpu_standin import FOUR_GPUS, UUIDS, worker_env

pytestmark = [pytest.mark.redis, pytest.mark.docker]


def submit(celery_app, store: PayloadStore, files: dict[str, str], **fields: object):
    spec = TaskSpec(
        task_id=f"gpu-{uuid.uuid4().hex[:10]}",
        payload=store.put(make_zip(files)),
        **{"gpus": 1, "memory_mb": 128, "cpus": 0.25, **fields},
    )
    return spec, celery_app.send_task(TASK_NAME, args=[spec.model_dump(mode="json")], task_id=spec.task_id, queue="gpu")


def wait_for(predicate, timeout: float):
    """Poll until predicate() is truthy (a wait for an event, not a speed check)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def test_docker_is_asked_for_the_held_gpus_and_they_come_back(start_worker, celery_app, store, leases) -> None:
    """Docker here has no NVIDIA runtime: it creates the container with the
    DeviceRequest and refuses to start it. The reason carries the DeviceIDs
    Docker recorded on the container (read back before its removal)."""
    worker = start_worker(queues="gpu", concurrency=2, **worker_env())
    # Another task holds GPU 0 (a lease as a worker would take it): the tasks get others.
    gpu0 = [
        GpuInfo(
            index=0,
            name="x",
            uuid=UUIDS[0],
            load_percent=0,
            memory_used_mb=0,
            memory_total_mb=FOUR_GPUS[0]["memory_mb"],
            temperature_c=None,
            power_w=None,
        )
    ]
    assert leases.allocate("someone-else", gpu0, 1, 0, ttl=120)
    try:
        results = [submit(celery_app, store, {"main.py": "print(1)\n"})[1] for _ in range(3)]
        for outcome in (celery_outcome(r, 120) for r in results):
            assert outcome.status is TaskStatus.FAILED and outcome.worker == worker.worker_id
            assert "docker refused the task" in outcome.reason and "container toolkit" in outcome.reason
            [held] = outcome.gpus
            assert held.uuid != UUIDS[0]
            assert f"DeviceIDs ['{held.uuid}']" in outcome.reason
        assert [lease.task_id for lease in leases.leases()] == ["someone-else"]  # theirs came back
    finally:
        leases.release("someone-else")
        worker.stop()


def test_a_killed_workers_gpu_comes_back(start_worker, celery_app, store, leases) -> None:
    worker = start_worker(
        queues="gpu",
        concurrency=1,
        HIVEMIND_RUNTIME="process",
        HIVEMIND_GPU_DEVICES=UUIDS[3],
        HIVEMIND_GPU_LEASE_TTL="3",
        **worker_env(),
    )
    spec, _ = submit(celery_app, store, {"main.py": "import time\ntime.sleep(120)\n"})
    held = wait_for(lambda: [lease for lease in leases.leases() if lease.task_id == spec.task_id], timeout=60)
    assert held and held[0].uuid == UUIDS[3], worker.log()
    # Kill the whole worker at once (main, pool process, the task): a crash, not a shutdown.
    main = psutil.Process(worker.proc.pid)
    for proc in [*main.children(recursive=True), main]:
        proc.send_signal(signal.SIGKILL)
    worker.proc.wait(10)
    t4 = [
        GpuInfo(
            index=3,
            name="Stand-in T4",
            uuid=UUIDS[3],
            load_percent=0,
            memory_used_mb=0,
            memory_total_mb=FOUR_GPUS[3]["memory_mb"],
            temperature_c=None,
            power_w=None,
        )
    ]
    assert leases.allocate("next", t4, 1, 0, ttl=60) is None  # still held right after the crash
    # No one renews the lease now: it lapses after HIVEMIND_GPU_LEASE_TTL and the GPU is free again.
    got = wait_for(lambda: leases.allocate("next", t4, 1, 0, ttl=60), timeout=30)
    assert got and got[0].uuid == UUIDS[3]
    assert [lease.task_id for lease in leases.leases()] == ["next"]
    leases.release("next")
