"""GPU tasks through real `celery worker` subprocesses, on a host whose four GPUs
of different memory are a stand-in: no GPU can exist on the test machine, so
the workers import the NVML stand-in (tests/usage/nvml_standin/pynvml.py)
instead of NVIDIA's driver. What is real: Redis, the workers and their pool
processes, the allocator's Lua, dockerd and the task processes."""

from __future__ import annotations

import io
import json
import re
import threading
import time
import uuid
import zipfile
from collections import defaultdict

import pytest

from hivemind_celery.core.model import TASK_NAME, TaskOutcome, TaskSpec, TaskStatus
from hivemind_celery.payloads.store import PayloadStore
from hivemind_celery.task.outcomes import celery_outcome
from tests.services_kit import make_zip
from tests.usage.gpu_standin import UUIDS, worker_env

pytestmark = [pytest.mark.redis, pytest.mark.docker]

OFFERED = ["0", "1", UUIDS[3]]  # the owner keeps GPU 2 (by index and UUID both)
HOLDER = (
    "import json, os, time\n"
    "start = time.time()\n"
    "time.sleep(2.5)\n"
    "print('GPU_RUN ' + json.dumps({'cuda': os.environ.get('CUDA_VISIBLE_DEVICES'),\n"
    "                               'start': start, 'end': time.time()}))\n"
)


@pytest.fixture(scope="module")
def process_workers(start_worker, tmp_path_factory) -> list:
    rt = tmp_path_factory.mktemp("gpu-rt")
    return [
        start_worker(
            queues="gpu",
            concurrency=2,
            HIVEMIND_RUNTIME="process",
            HIVEMIND_RUNTIME_DIR=str(rt),
            HIVEMIND_GPU_DEVICES=",".join(OFFERED),
            HIVEMIND_GPU_WAIT="60",
            **worker_env(),
        )
        for _ in range(2)
    ]


def submit(celery_app, store: PayloadStore, files: dict[str, str], **fields: object):
    spec = TaskSpec(
        task_id=f"gpu-{uuid.uuid4().hex[:10]}",
        payload=store.put(make_zip(files)),
        **{"gpus": 1, "memory_mb": 128, "cpus": 0.25, **fields},
    )
    return celery_app.send_task(TASK_NAME, args=[spec.model_dump(mode="json")], task_id=spec.task_id, queue="gpu")


def outcome_of(result, timeout: float = 120) -> TaskOutcome:
    return celery_outcome(result, timeout)


def test_two_workers_never_hand_one_gpu_to_two_tasks(process_workers, celery_app, store, leases) -> None:
    watching = threading.Event()
    seen: dict[str, int] = defaultdict(int)  # GPU -> most tasks seen holding it at once
    both_busy = []

    def watch() -> None:
        while not watching.is_set():
            holders: dict[str, set[str]] = defaultdict(set)
            for lease in leases.leases():
                holders[lease.uuid].add(lease.task_id)
            for gpu_id, tasks in holders.items():
                seen[gpu_id] = max(seen[gpu_id], len(tasks))
            both_busy.append(len(holders))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    results = [submit(celery_app, store, {"main.py": HOLDER}) for _ in range(6)]
    outcomes = [outcome_of(r) for r in results]
    watching.set()
    watcher.join(5)

    runs = []
    for outcome in outcomes:
        assert outcome.status is TaskStatus.SUCCEEDED, outcome.reason
        [held] = outcome.gpus  # the execution report names the GPU: index, UUID, name
        printed = json.loads(re.search(r"GPU_RUN (.*)", outcome.log_tail).group(1))  # type: ignore[union-attr]
        assert printed["cuda"] == held.uuid  # the process saw only its own GPU
        assert held.name.startswith("Stand-in") and UUIDS[held.index] == held.uuid
        runs.append((held.uuid, printed["start"], printed["end"], outcome.worker))
    assert {w.worker_id for w in process_workers} == {run[3] for run in runs}  # both workers served
    used = {run[0] for run in runs}
    assert UUIDS[2] not in used and used <= {UUIDS[0], UUIDS[1], UUIDS[3]}
    for gpu_id in used:  # on one GPU, one task after another: never two at once
        spans = sorted((start, end) for g, start, end, _ in runs if g == gpu_id)
        assert all(earlier[1] <= later[0] for earlier, later in zip(spans, spans[1:], strict=False)), spans
    assert seen and max(seen.values()) == 1  # as recorded in Redis, too
    assert max(both_busy) == 3  # four pool processes, three GPUs: all three were held at once
    assert leases.leases() == []  # every GPU given back
    with zipfile.ZipFile(io.BytesIO(store.get(outcomes[0].result_ref))) as archive:
        report = json.loads(archive.read("execution_report.json"))
    assert report["gpus"] == [g.model_dump(mode="json") for g in outcomes[0].gpus]
    assert {"gpu_percent", "gpu_memory_peak_bytes"} <= set(report["usage"])


def test_oversize_requests_are_refused_with_the_reason(process_workers, celery_app, store, leases) -> None:
    many = outcome_of(submit(celery_app, store, {"main.py": "print(1)\n"}, gpus=4))
    assert many.status is TaskStatus.REJECTED
    assert "asks for 4 GPU(s); this host offers 3" in many.reason
    big = outcome_of(submit(celery_app, store, {"main.py": "print(1)\n"}, gpus=0, gpu_memory_mb=90_000))
    assert big.status is TaskStatus.REJECTED
    assert "90000 MiB of GPU memory" in big.reason and "has 81920 MiB" in big.reason
    assert leases.leases() == []
