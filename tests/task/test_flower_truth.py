"""Flower tells the truth: the demo's failing example shows FAILURE in Flower's own
task list (a real `celery flower` subprocess, read through its HTTP API), a
succeeded task SUCCESS, while the bridge still relays the failed outcome with its
result zip to the Node Pool and a redelivered run returns the first outcome.

Real parts: Redis, dockerd, a `celery worker` subprocess, Flower, the bridge's
gRPC server; the Node Pool is the bridge tests' RecordingPool on loopback.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from bridge.server import Bridge
from hivemind_celery.core.model import TASK_NAME, TaskOutcome, TaskStatus
from hivemind_celery.task.idempotency import TaskGuard
from hivemind_celery.task.outcomes import TaskUnsuccessful, outcome_of
from tests.bridge_kit import RecordingPool, bridge_settings, execute, wait_for
from tests.nodepool_kit import free_port
from tests.services_kit import ROOT, make_zip, worker_env

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]

FAILING = ROOT / "hivemind" / "demo" / "examples" / "failing_task"
FLOWER_DB = 62  # a database of this module's own: its worker must not take other modules' tasks


@pytest.fixture(scope="module")
def redis_url(redis_base: str) -> str:
    url = f"{redis_base}/{FLOWER_DB}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def pool() -> Iterator[RecordingPool]:
    recording = RecordingPool().start()
    yield recording
    recording.stop()


@pytest.fixture
def bridge(redis_url: str, pool: RecordingPool) -> Iterator[Bridge]:
    started = Bridge(bridge_settings(redis_url, pool)).start()
    yield started
    started.stop(grace=0)


@pytest.fixture
def flower(redis_url: str, tmp_path) -> Iterator[Callable[[str], dict[str, Any] | None]]:
    port = free_port()
    env = worker_env(redis_url, "flower", FLOWER_UNAUTHENTICATED_API="true")
    log = open(tmp_path / "flower.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "hivemind_celery",
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
            "--persistent=False",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def task(task_id: str) -> dict[str, Any] | None:
        """Flower's record of one task (from its /api/tasks list), None while it has none."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/tasks", timeout=5) as reply:
                return json.loads(reply.read()).get(task_id)
        except OSError:
            return None

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    try:
        wait_for(up, "Flower up", limit=60)
        yield task
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def example_zip() -> bytes:
    return make_zip({path.name: path.read_bytes() for path in FAILING.iterdir() if path.is_file()})


def test_flower_shows_failure_and_the_bridge_relays_the_outcome(
    start_worker, bridge: Bridge, pool: RecordingPool, flower, redis_url: str
) -> None:
    worker = start_worker("cpu", concurrency=1)
    wait_for(lambda: bridge.registry.capacity().workers >= 1, "the worker in the registry")
    # A succeeded task first: once Flower lists it, Flower is receiving the worker's events.
    assert execute(bridge, "t-ok", make_zip({"main.py": "print('fine')"}), cpu_usage=100.0, memory_gb=1).success
    ok = wait_for(lambda: (flower("t-ok") or {}).get("state") == "SUCCESS" and flower("t-ok"), "t-ok in Flower", limit=240)
    assert ok["state"] == "SUCCESS"

    reply = execute(bridge, "t-fail", example_zip(), cpu_usage=100.0, memory_gb=1)
    assert reply.success, reply.message
    record = wait_for(
        lambda: (flower("t-fail") or {}).get("state") in ("FAILURE", "SUCCESS") and flower("t-fail"),
        "t-fail finished in Flower",
        limit=240,
    )
    assert record["state"] == "FAILURE", (record, worker.log())
    assert "failed" in (record.get("exception") or "")

    results = wait_for(lambda: pool.of("TaskResultUpload", "t-fail"), "the failed result relayed", limit=60)
    with zipfile.ZipFile(io.BytesIO(results[0].result_zip)) as archive:
        report = json.loads(archive.read("execution_report.json"))
    assert report["status"] == "failed" and "exit code 1" in report["reason"]

    # The Celery result still carries the whole outcome; the task guard kept the same one.
    celery_result = bridge.celery.AsyncResult("t-fail")
    assert celery_result.state == "FAILURE"
    carried = outcome_of(celery_result.result)
    assert carried is not None and carried.status is TaskStatus.FAILED
    assert TaskGuard(bridge.redis, "t-fail").stored_outcome() == carried

    # A redelivered message returns the first outcome (idempotency) and fails again in Celery.
    spec_args = json.loads(json.dumps(celery_result.args)) if celery_result.args else None
    assert spec_args, "result_extended keeps the task's arguments"
    redelivered = bridge.celery.send_task(TASK_NAME, args=spec_args, task_id="t-fail", queue="cpu")
    value = redelivered.get(timeout=120, propagate=False)
    assert isinstance(value, Exception) and type(value).__name__ == TaskUnsuccessful.__name__
    assert outcome_of(value) == carried
    wait_for(lambda: "task already ran; returning its outcome" in worker.log(), "the guard's answer in the log")


def test_outcome_of_reads_both_ends() -> None:
    outcome = TaskOutcome(task_id="t", status=TaskStatus.TIMED_OUT, reason="task timed out after 5 s")
    data = outcome.model_dump(mode="json")
    assert outcome_of(data) == outcome
    assert outcome_of(TaskUnsuccessful(data)) == outcome
    assert str(TaskUnsuccessful(data)) == "timed_out: task timed out after 5 s"
    assert outcome_of(RuntimeError("boom")) is None
