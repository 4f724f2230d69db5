"""A pause, end to end: real `celery worker` subprocesses, real Redis, real dockerd.

The owner's preferences (site/prefs.py) pause the site; each worker's
preferences step (worker/prefs.py) publishes the mode within a second and its
running task freezes (Docker: the container's cgroup freezer, read on the host;
the process runtime: SIGSTOP of the task's process group), the bridge's
heartbeat reports a status other than "Idle", and resume thaws it. Frozen time
does not count against the task's timeout, and a task frozen past
HIVEMIND_MAX_FROZEN_SECONDS is stopped with that reason. The schedule and the
owner-busy rule pause and resume with no one touching the preferences.

The bridge's heartbeat is given a recording session in place of the gRPC link
to a Node Pool (the deployed pool cannot run here): it is the bridge's own
report() code that builds the status.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime, timedelta
from typing import Any

import psutil
import pytest

from bridge.heartbeat import Heartbeat
from bridge.server import Bridge
from hivemind_celery.core.model import TaskStatus
from hivemind_celery.core.settings import Settings
from hivemind_celery.task.outcomes import celery_outcome
from tests.task.pause_kit import freezer_state, running_container, submit, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]

# 24 ticks of 0.25 s: about 6 s of running time.
TICKING = {
    "main.py": "import time\nfor i in range(24):\n    print('tick', i, flush=True)\n    time.sleep(0.25)\n"
    "print('done', flush=True)\n"
}


def consumed(celery_app, worker) -> list[str] | None:
    """The queues the worker consumes now (`celery inspect active_queues`)."""
    replies = celery_app.control.inspect([worker.hostname], timeout=2).active_queues() or {}
    queues = replies.get(worker.hostname)
    return None if queues is None else sorted(q["name"] for q in queues)


class RecordingSession:
    """Stands in for the gRPC session to a Node Pool: keeps what the bridge sends."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.nodes = type("Nodes", (), {"ReportStatus": "ReportStatus"})()
        self.workers = type("Workers", (), {"TaskUsage": "TaskUsage"})()

    def call(self, method: str, request: Any, **_: Any) -> None:
        self.sent.append((method, request))


def bridge_status(redis_client) -> str:
    settings = Settings(username="site-node", password="pw", nodepool_address="localhost:50051")
    bridge = Bridge(settings, redis_client=redis_client)  # not started: its heartbeat reports once, by hand
    try:
        return Heartbeat(bridge.parts, RecordingSession(), port=50053).report()
    finally:
        bridge.celery.close()


def test_pause_freezes_the_container_and_resume_finishes_with_its_timeout(
    start_worker, celery_app, store, prefs, redis_client, docker_client
) -> None:
    worker = start_worker("cpu", concurrency=1)
    # running time ~6 s + frozen >= 8 s is beyond the 10 s timeout: it succeeds only if frozen time does not count
    spec, result = submit(celery_app, store, TICKING, timeout=10)
    container = running_container(docker_client, spec.task_id)
    wait_for(
        lambda: b"tick 2" in b"".join(f for _, e in redis_client.xrange(f"hm:task:{spec.task_id}:output") for f in e.values()),
        "the task ticking",
    )
    assert bridge_status(redis_client) != "Paused"
    prefs.pause()
    wait_for(lambda: freezer_state(container) == "FROZEN", "the container's freezer FROZEN", limit=10)
    container.reload()
    assert container.attrs["State"]["Paused"] is True
    assert prefs.mode().paused and "paused by the owner" in prefs.mode().reason
    status = bridge_status(redis_client)
    assert status.startswith("Paused") and status != "Idle"
    frozen_at = time.monotonic()
    time.sleep(8)  # hold the pause: the task's clock must not run meanwhile
    assert freezer_state(container) == "FROZEN"
    prefs.resume()
    wait_for(lambda: freezer_state(container) == "THAWED", "the container thawed", limit=10)
    outcome = celery_outcome(result, 120)
    assert time.monotonic() - frozen_at >= 8
    assert outcome.status is TaskStatus.SUCCEEDED, (outcome.reason, worker.log())
    assert "done" in outcome.log_tail
    # CPU-s are what the kernel measured: a sleeping ticker uses far less than its wall time
    assert outcome.main_usage is not None and outcome.main_usage.cpu_seconds < outcome.duration / 2
    assert "task frozen" in worker.log() and "task thawed" in worker.log()
    worker.stop()  # each test has the queue to one worker of its own


def test_frozen_past_the_limit_is_stopped_with_that_reason(
    start_worker, celery_app, store, prefs, redis_client, docker_client
) -> None:
    worker = start_worker("cpu", concurrency=1, HIVEMIND_MAX_FROZEN_SECONDS="3")
    spec, result = submit(celery_app, store, TICKING, timeout=60)
    container = running_container(docker_client, spec.task_id)
    prefs.pause()
    wait_for(lambda: freezer_state(container) == "FROZEN", "the container frozen", limit=10)
    _, waiting = submit(celery_app, store, {"main.py": "print('after the pause')"}, timeout=60)
    outcome = celery_outcome(result, 60)
    assert outcome.status is TaskStatus.CANCELLED
    assert "HIVEMIND_MAX_FROZEN_SECONDS" in outcome.reason and "3 s" in outcome.reason
    assert result.state == "FAILURE"  # not SUCCESS in Celery (and so in Flower)
    # The worker takes nothing new while paused: it consumes no queue, the second task waits queued.
    wait_for(lambda: consumed(celery_app, worker) == [], "the worker consuming no queue while paused", limit=20)
    assert prefs.mode().paused and waiting.state == "PENDING"
    prefs.resume()
    wait_for(lambda: consumed(celery_app, worker) == ["cpu"], "the worker consuming again", limit=20)
    assert celery_outcome(waiting, 120).status is TaskStatus.SUCCEEDED
    worker.stop()


def test_process_runtime_stops_the_process_group(start_worker, celery_app, store, prefs, tmp_path) -> None:
    worker = start_worker("cpu", concurrency=1, HIVEMIND_RUNTIME="process", HIVEMIND_RUNTIME_DIR=str(tmp_path))
    spec, result = submit(celery_app, store, TICKING, timeout=10)

    def task_states() -> list[str]:
        """psutil states of the task's own processes (the launcher exec'd into `python main.py`)."""
        states = []
        for proc in psutil.process_iter(["cwd", "cmdline", "status"]):
            cmdline = proc.info["cmdline"] or []
            if (
                (proc.info["cwd"] or "").startswith(str(tmp_path / spec.task_id))
                and cmdline
                and cmdline[-1] == "main.py"
                and "-c" not in cmdline
            ):
                states.append(proc.info["status"])
        return states

    wait_for(task_states, "the task's process", limit=60)
    time.sleep(0.5)
    prefs.pause()
    wait_for(lambda: set(task_states()) == {psutil.STATUS_STOPPED}, "the process group stopped", limit=10)
    time.sleep(8)
    assert set(task_states()) == {psutil.STATUS_STOPPED}
    prefs.resume()
    wait_for(lambda: psutil.STATUS_STOPPED not in task_states(), "the process group continued", limit=10)
    outcome = celery_outcome(result, 60)
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.reason  # ~6 s running + 8 s frozen, timeout 10 s
    worker.stop()


def test_the_schedule_pauses_and_resumes_on_its_own(start_worker, prefs) -> None:
    """Hours that leave out exactly the next minute of the local clock: the worker
    pauses when that minute starts and runs again when it ends, no one touching
    the preferences (at most two minutes)."""
    worker = start_worker("cpu", concurrency=1)
    now = datetime.now().astimezone()
    excluded = (now + timedelta(minutes=1)).replace(second=0, microsecond=0)
    if (excluded - now).total_seconds() < 5:  # too close to the boundary to see "running" first
        excluded += timedelta(minutes=1)
    after = excluded + timedelta(minutes=1)
    hours = f"{after:%H:%M}-{excluded:%H:%M}"
    prefs.update(hours=hours)
    wait_for(lambda: prefs.mode().state == "running" and prefs.client.hlen("hm:site:modes"), "running first", 10)
    paused = wait_for(lambda: prefs.mode().paused and prefs.mode(), "the schedule's pause", limit=140, every=0.2)
    assert paused.reason == f"outside the hours {hours}"
    wait_for(lambda: prefs.mode().state == "running", "the schedule's resume", limit=80, every=0.2)
    worker.stop()


def test_a_cpu_hog_outside_the_tasks_pauses_and_its_end_resumes(start_worker, prefs) -> None:
    """Two busy loops (one per core) outside any task make the owner 'busy'."""
    worker = start_worker("cpu", concurrency=1)
    prefs.update(suspend_above_cpu_percent=80)
    wait_for(lambda: prefs.client.hlen("hm:site:modes"), "the mode published", 10)
    cores = psutil.cpu_count() or 1
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]
    try:
        busy = wait_for(lambda: prefs.mode().paused and prefs.mode(), "the owner-busy pause", limit=30)
        assert busy.reason.startswith("the owner is using the machine (CPU")
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    wait_for(lambda: prefs.mode().state == "running", "the resume once the hog ended", limit=120)
    worker.stop()
