"""The whole chain, everything real: the user CLI (`python -m hivemind.cli`)
→ our Node Pool (`python -m nodepool`, SQLite) → the bridge (`python -m bridge`)
→ Redis → a `celery worker` subprocess → a hardened container on dockerd, and
the output, usage and result back the same way, all over gRPC on loopback.

The one thing that is not real is a GPU (there is none here); see
test_gpu_task_is_routed_to_the_gpu_queue_only for what stands in for it.
Restarts of the pool and the bridge are in test_e2e_restart.py.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis

from hivemind_celery.core import keys
from hivemind_celery.site.registry import Registry, WorkerCapacity
from proto import nodepool_pb2 as pb
from proto import nodepool_pb2_grpc as pb_grpc
from tests.e2e_kit import (
    BRIDGE_MAX_PAYLOAD_BYTES,
    OWNER,
    POOL_MAX_TASK_BYTES,
    POOL_POLICY,
    SITE,
    Site,
    expected_reward,
    fetch_result,
    start_site,
    submit,
    wait_status,
    write_zip,
)
from tests.nodepool_kit import wait_for
from tests.services_kit import make_zip

pytestmark = [pytest.mark.docker, pytest.mark.redis]

PYTHON_TASK = """\
import time
print("first line", flush=True)
time.sleep(5)
total = sum(i * i for i in range(2_000_000))
with open("answer.txt", "w") as out:
    out.write(str(total))
print("last line", flush=True)
"""
SLOW_TASK = """\
import time
with open("progress.txt", "w") as progress:
    for tick in range(300):
        print(f"tick {tick}", flush=True)
        progress.write(f"{tick}\\n")
        progress.flush()
        time.sleep(1)
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, redis_url: str, start_worker) -> Iterator[Site]:  # noqa: ANN001
    running = start_site(tmp_path_factory.mktemp("e2e"), redis_url, start_worker)
    yield running
    running.stop()


def test_python_task_runs_streams_and_pays_the_node(site: Site, tmp_path: Path) -> None:
    node_before, owner_before = site.balance(SITE), site.balance(OWNER)
    task_id = f"e2e-{uuid.uuid4().hex[:12]}"
    path = write_zip(tmp_path, {"main.py": PYTHON_TASK, "data/input.txt": "kept\n"})
    waiting = site.cli_popen("submit", str(path), "--task-id", task_id, "--wait", "--json", "--poll", "0.2")

    # Output streams: the first line shows through `logs` while the task still runs.
    def first_line_while_running() -> bool:
        shown = site.cli("logs", task_id).stdout
        return "first line" in shown and "last line" not in shown and site.task(task_id)["status"] == "RUNNING"

    wait_for(first_line_while_running, timeout=120, what="output streamed while the task runs")
    stdout, stderr = waiting.communicate(timeout=180)
    assert waiting.returncode == 0, stderr
    final = json.loads(stdout)
    assert final["status"] == "COMPLETED", final
    assert final["report"]["status"] == "succeeded" and final["report"]["exit_code"] == 0
    assert "last line" in site.cli_ok("logs", task_id)

    with fetch_result(site, task_id, tmp_path) as result:
        names = set(result.namelist())
        assert {"main.py", "data/input.txt", "answer.txt", "execution_report.json", "task_logs.txt"} <= names, names
        assert result.read("answer.txt").decode() == str(sum(i * i for i in range(2_000_000)))
        report = json.loads(result.read("execution_report.json"))
    assert report["task_id"] == task_id and report["worker"] == site.cpu_worker.worker_id
    assert report["usage"]["samples"] > 0

    due = expected_reward(report)
    assert due > POOL_POLICY.minimum  # a few seconds at one unit per second: a real figure
    assert site.balance(SITE) - node_before == due
    assert owner_before - site.balance(OWNER) == due


def test_gpu_task_is_routed_to_the_gpu_queue_only(site: Site, tmp_path: Path, start_worker, redis_client) -> None:  # noqa: ANN001
    """What is real: the CLI's --gpu, the pool matching it only to a node with GPU
    capacity, the bridge's queue choice, a `celery worker -Q gpu` subprocess taking it
    and the result coming back. What is not: this machine has no GPU, so the GPU the
    site offers is a stand-in registry record (a GPU machine's worker would write the
    same one), and the gpu worker cannot give the container a GPU; the run itself
    fails with a reason, which is not what is checked here."""
    gpu_worker = start_worker("gpu", concurrency=1, HIVEMIND_SAMPLE_INTERVAL="0.5")
    registry = Registry(redis_client)
    registry.register(
        WorkerCapacity(
            worker_id="stand-in-gpu-machine",
            hostname="stand-in",
            cpus=1,
            memory_mb=2048,
            gpus=1,
            gpu_memory_mb=8192,
            gpu_names=["Stand-in GPU"],
            queues=["gpu"],
        ),
        ttl=600,
    )
    try:
        wait_for(
            lambda: (site.row("SELECT gpu_score FROM nodes WHERE node_id = ?", SITE) or [0])[0] > 0,
            timeout=30,
            what="the bridge advertising the GPU",
        )
        task_id = submit(site, write_zip(tmp_path, {"main.py": "print('on a gpu?')\n"}), "--gpu")
        wait_status(site, task_id, {"COMPLETED", "FAILED"})
        with fetch_result(site, task_id, tmp_path) as result:
            report = json.loads(result.read("execution_report.json"))
    finally:
        registry.unregister("stand-in-gpu-machine")
        gpu_worker.stop()
    assert report["worker"] == gpu_worker.worker_id
    assert f"Task hivemind.run_task[{task_id}] received" in gpu_worker.log()
    assert task_id not in site.cpu_worker.log()


def test_stop_ends_a_running_task_and_the_partial_result_comes_back(site: Site, tmp_path: Path) -> None:
    task_id = submit(site, write_zip(tmp_path, {"main.py": SLOW_TASK}))
    wait_for(lambda: "tick 2" in site.cli("logs", task_id).stdout, timeout=120, what="the slow task ticking")
    stopped = site.cli("stop", task_id)
    assert stopped.returncode == 0 and "stopping" in stopped.stderr, stopped.stderr
    # The task would tick for 300 s; a stop that works ends it long before.
    wait_for(lambda: site.task(task_id)["result_at"] is not None, timeout=60, what="the stopped task's result")
    assert site.task(task_id)["status"] == "STOPPED"
    with fetch_result(site, task_id, tmp_path) as result:
        assert "task_stopped.txt" in result.namelist()
        ticks = result.read("progress.txt").decode().split()
        report = json.loads(result.read("execution_report.json"))
    assert 3 <= len(ticks) < 300
    assert report["status"] == "cancelled"


def test_full_site_is_never_sent_a_task_it_cannot_start(site: Site, tmp_path: Path) -> None:
    """The worker offers one CPU: while one 1-core task runs the bridge reports a busy
    status and no free score, so the pool keeps the second task queued rather than
    sending it to be refused."""
    first = submit(site, write_zip(tmp_path, {"main.py": SLOW_TASK}))
    wait_status(site, first, {"RUNNING"})
    wait_for(lambda: not site.node_idle(), timeout=30, what="the bridge reporting the site busy")
    second = submit(site, write_zip(tmp_path, {"main.py": "print('second')\n"}))
    time.sleep(3)  # many dispatch rounds (0.2 s each) and heartbeats (0.3 s)
    assert site.task(second)["status"] == "PENDING"
    assert site.task(second)["attempts"] == 0, site.task(second)["message"]

    site.cli_ok("stop", first)
    assert wait_status(site, second, {"COMPLETED"}) == "COMPLETED"
    assert site.task(second)["attempts"] == 1  # attempts count dispatches: once, when there was room
    refused = [r for r in site.bridge_lines_about(second) if "refused" in r["msg"]]
    assert refused == []
    assert site.bridge_lines_about(second), "the bridge logs each task it takes"
    assert not [r for r in site.pool.log_records() if r.get("task_id") == second and "did not take" in r["message"]]


def test_corrupt_and_oversized_zips_are_refused_with_a_reason(site: Site, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(b"PK\x03\x04 this is not really a zip")
    done = site.cli("submit", str(corrupt))
    assert done.returncode == 1 and "not a zip file" in done.stderr

    huge = tmp_path / "huge.zip"
    huge.write_bytes(make_zip({"main.py": "print(1)\n", "blob.bin": os.urandom(POOL_MAX_TASK_BYTES)}))
    done = site.cli("submit", str(huge))
    assert done.returncode == 1 and "more than the limit" in done.stderr

    # Within the pool's limit but above the bridge's: the pool sends it, the bridge
    # refuses it with its reason, the pool shows that reason and keeps the task.
    big = write_zip(tmp_path, {"main.py": "print(1)\n", "blob.bin": os.urandom(BRIDGE_MAX_PAYLOAD_BYTES + 1024)})
    task_id = submit(site, big)
    wait_for(
        lambda: "above this site's limit" in site.task(task_id)["message"],
        timeout=60,
        what="the bridge's refusal reaching the task's status",
    )
    assert site.task(task_id)["status"] == "PENDING"
    site.cli_ok("stop", task_id)
    # Bad zips never reached a worker, and the site still serves.
    wait_for(site.node_idle, timeout=30, what="the site Idle again")
    ok = submit(site, write_zip(tmp_path, {"main.py": "print('still serving')\n"}))
    assert wait_status(site, ok, {"COMPLETED"}) == "COMPLETED"


def test_execute_task_from_an_unknown_caller_is_refused(site: Site) -> None:
    """The real bridge process, called on loopback without the pool's shared secret.
    The allowlist and secret cases in detail: test_bridge_service.py
    (test_unknown_caller_is_refused_but_health_answers, test_shared_secret_is_required_when_set)."""
    with grpc.insecure_channel(f"127.0.0.1:{site.bridge_port}") as channel:
        stub = pb_grpc.WorkerNodeServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ExecuteTask(
                pb.ExecuteTaskRequest(task_id="e2e-intruder", task_zip=make_zip({"main.py": "1"}), cpu_usage=100, memory_gb=1),
                timeout=10,
            )
    assert refused.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
    assert not redis.Redis.from_url(site.redis_url).hexists(keys.bridge_owed(SITE), "e2e-intruder")
