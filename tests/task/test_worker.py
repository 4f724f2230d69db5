"""The worker end to end: a real `celery worker` subprocess, real Redis, real
dockerd, tasks sent the way the bridge sends them."""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import subprocess
import sys
import time
import uuid
import zipfile

import docker
import pytest

from hivemind_celery.core import keys
from hivemind_celery.core.model import TASK_NAME, TaskOutcome, TaskSpec, TaskStatus
from hivemind_celery.site.activity import Activity
from hivemind_celery.task.attempts import AttemptLog
from hivemind_celery.task.outcomes import celery_outcome
from tests.fault_kit import wait_until
from tests.services_kit import BUSYBOX_IMAGE, MISSING_IMAGE, ROOT, make_zip, worker_env

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture(scope="module")
def cpu_worker(start_worker):
    return start_worker("cpu")


def submit(celery_app, store, files_or_zip, queue=None, **spec_fields):
    data = files_or_zip if isinstance(files_or_zip, bytes) else make_zip(files_or_zip)
    spec = TaskSpec(task_id=spec_fields.pop("task_id", f"t-{uuid.uuid4().hex[:10]}"), payload=store.put(data), **spec_fields)
    return spec, celery_app.send_task(
        TASK_NAME, args=[spec.model_dump(mode="json")], task_id=spec.task_id, queue=queue or spec.queue.value
    )


def outcome_of(result, timeout: float = 120) -> TaskOutcome:
    return celery_outcome(result, timeout)


def result_files(store, outcome) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(store.get(outcome.result_ref))) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_success_returns_output_files_and_report(cpu_worker, celery_app, store, redis_client):
    spec, result = submit(
        celery_app,
        store,
        {
            "main.py": "import pathlib\nprint('hello from the task')\n"
            "pathlib.Path('out').mkdir()\npathlib.Path('out/answer.txt').write_text('42')\n",
            "data/input.txt": "input",
        },
    )
    outcome = outcome_of(result)
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.reason
    assert outcome.exit_code == 0
    assert "hello from the task" in outcome.log_tail
    assert outcome.worker == cpu_worker.worker_id
    files = result_files(store, outcome)
    assert files["out/answer.txt"] == b"42"
    assert files["data/input.txt"] == b"input"
    assert b"hello from the task" in files["task_logs.txt"]
    assert spec.task_id.encode() in files["execution_log.txt"]
    assert "task_stopped.txt" not in files
    report = json.loads(files["execution_report.json"])
    assert report["status"] == "succeeded" and report["exit_code"] == 0
    # The output was streamed to Redis for the bridge while it ran.
    from hivemind_celery.task.streams import read_output

    _, streamed = read_output(redis_client, spec.task_id)
    assert b"hello from the task" in streamed


def test_nonzero_exit_is_failed_with_code(cpu_worker, celery_app, store):
    _, result = submit(celery_app, store, {"main.py": "import sys\nprint('bad')\nsys.exit(3)\n"})
    outcome = outcome_of(result)
    assert outcome.status is TaskStatus.FAILED
    assert outcome.exit_code == 3
    assert "3" in outcome.reason


def test_timeout_is_reported_timed_out(cpu_worker, celery_app, store):
    _, result = submit(celery_app, store, {"main.py": "import time\nprint('start', flush=True)\ntime.sleep(120)\n"}, timeout=2)
    outcome = outcome_of(result)
    assert outcome.status is TaskStatus.TIMED_OUT
    assert outcome.duration < 60


def test_memory_hog_is_oom_killed(cpu_worker, celery_app, store):
    _, result = submit(celery_app, store, {"main.py": "b = bytearray(400 * 1024 * 1024)\nprint(len(b))\n"}, memory_mb=64)
    outcome = outcome_of(result)
    assert outcome.status is TaskStatus.OOM_KILLED, (outcome.status, outcome.reason)


def test_sandbox_no_network_readonly_root_non_root(cpu_worker, celery_app, store):
    probe = (
        "import json, os, socket\n"
        "r = {'uid': os.getuid()}\n"
        "try:\n    open('/etc/evil', 'w'); r['etc'] = 'written'\n"
        "except OSError as e:\n    r['etc'] = e.strerror\n"
        "s = socket.socket(); s.settimeout(2)\n"
        "try:\n    s.connect(('1.1.1.1', 80)); r['net'] = 'connected'\n"
        "except OSError as e:\n    r['net'] = str(e)\n"
        "r['ifaces'] = sorted(os.listdir('/sys/class/net'))\n"
        "open('probe.json', 'w').write(json.dumps(r))\n"
    )
    _, result = submit(celery_app, store, {"main.py": probe})
    outcome = outcome_of(result)
    assert outcome.succeeded, outcome.reason
    probe_result = json.loads(result_files(store, outcome)["probe.json"])
    assert probe_result["uid"] == 1000
    assert probe_result["etc"] != "written"
    assert probe_result["net"] != "connected"
    assert probe_result["ifaces"] == ["lo"]


def test_fork_bomb_is_contained(cpu_worker, celery_app, store):
    bomb = "bomb() { bomb | bomb & }; bomb"
    _, result = submit(celery_app, store, {"run.sh": bomb}, pids=64, timeout=10)
    outcome = outcome_of(result)
    # Contained: it ends (by timeout or failure) and the worker still serves.
    assert outcome.status in (TaskStatus.TIMED_OUT, TaskStatus.FAILED, TaskStatus.SUCCEEDED)
    _, again = submit(celery_app, store, {"main.py": "print('still here')"})
    assert outcome_of(again).succeeded


@pytest.mark.parametrize(
    "name, payload, reason",
    [
        ("zip-slip", {"../evil.py": "x"}, "escapes"),
        ("absolute", {"/etc/evil.py": "x"}, "absolute"),
        ("not-a-zip", b"this is not a zip file", "zip"),
    ],
)
def test_hostile_payloads_rejected_and_worker_keeps_serving(cpu_worker, celery_app, store, name, payload, reason):
    _, result = submit(celery_app, store, payload)
    outcome = outcome_of(result)
    assert outcome.status is TaskStatus.REJECTED, name
    assert reason in outcome.reason.lower(), outcome.reason
    assert outcome.result_ref, "even a rejected task gets a result zip"
    _, again = submit(celery_app, store, {"main.py": "print('ok')"})
    assert outcome_of(again).succeeded


def _symlink_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("main.py", "print('x')")
        link = zipfile.ZipInfo("passwd")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    return buf.getvalue()


def _zip_bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("main.py", "print('x')")
        archive.writestr("zeros.bin", b"\0" * (200 * 1024 * 1024))
    return buf.getvalue()


@pytest.mark.parametrize("name, make, reason", [("symlink", _symlink_zip, "symbolic link"), ("zip-bomb", _zip_bomb, "ratio")])
def test_symlink_and_bomb_rejected(cpu_worker, celery_app, store, name, make, reason):
    _, result = submit(celery_app, store, make())
    outcome = outcome_of(result)
    assert outcome.status is TaskStatus.REJECTED, name
    assert reason in outcome.reason.lower(), outcome.reason


def test_missing_image_is_rejected_clearly(cpu_worker, celery_app, store):
    # The test workers allow this image name, but it does not exist anywhere.
    _, result = submit(celery_app, store, {"main.py": "print(1)"}, image=MISSING_IMAGE)
    outcome = outcome_of(result)
    assert outcome.status is TaskStatus.REJECTED
    assert MISSING_IMAGE in outcome.reason
    _, result = submit(celery_app, store, {"main.py": "print(1)"}, image="not-allowed:latest")
    outcome = outcome_of(result)
    assert outcome.status is TaskStatus.REJECTED and "allowed" in outcome.reason


def test_same_task_id_runs_once(cpu_worker, celery_app, store, redis_client):
    task_id = f"dup-{uuid.uuid4().hex[:8]}"
    files = {"main.py": "import uuid, time\ntime.sleep(1)\nprint(uuid.uuid4().hex)\n"}
    _, first = submit(celery_app, store, files, task_id=task_id)
    _, second = submit(celery_app, store, files, task_id=task_id)
    one, two = outcome_of(first), outcome_of(second)
    assert one.succeeded and one.log_tail == two.log_tail
    assert int(redis_client.get(keys.task_attempts(task_id))) == 1


def test_a_run_is_settled_just_after_its_outcome(cpu_worker, celery_app, store, redis_client):
    # The lock, the attempts record and the history entry are settled in
    # RunTask.after_return, once Celery has stored the result: soon after, never lost.
    spec, result = submit(celery_app, store, {"keep.txt": "x"}, image=BUSYBOX_IMAGE, command=["true"])
    assert outcome_of(result).succeeded
    wait_until(lambda: not redis_client.exists(keys.task_lock(spec.task_id)), 10, "the task's lock released")
    assert spec.task_id in [task for task, _ in Activity(redis_client).history()]
    assert spec.task_id not in [task for task, _ in Activity(redis_client).running()]
    assert not redis_client.exists(AttemptLog(redis_client, spec.task_id).key)
    assert redis_client.get(keys.task_outcome(spec.task_id))  # kept: a later delivery gets it


def _containers_of(docker_client, task_id):
    return docker_client.containers.list(all=True, filters={"label": f"hivemind.task_id={task_id}"})


def test_revoke_terminate_removes_container_within_5s(cpu_worker, celery_app, store, docker_client):
    spec, result = submit(celery_app, store, {"main.py": "import time\nprint('up', flush=True)\ntime.sleep(300)\n"})
    deadline = time.monotonic() + 60
    while not _containers_of(docker_client, spec.task_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _containers_of(docker_client, spec.task_id), "the task's container never started"
    celery_app.control.revoke(spec.task_id, terminate=True)
    revoked_at = time.monotonic()
    while _containers_of(docker_client, spec.task_id) and time.monotonic() - revoked_at < 5:
        time.sleep(0.1)
    assert not _containers_of(docker_client, spec.task_id), "container still there 5 s after revoke"
    # The main process recorded the task as cancelled with a result zip.
    guard_deadline = time.monotonic() + 20
    from hivemind_celery.task.idempotency import TaskGuard

    guard = TaskGuard(store._redis, spec.task_id)
    while guard.stored_outcome() is None and time.monotonic() < guard_deadline:
        time.sleep(0.2)
    outcome = guard.stored_outcome()
    assert outcome is not None and outcome.status is TaskStatus.CANCELLED
    assert "task_stopped.txt" in result_files(store, outcome)


def test_stop_request_ends_cancelled_with_partial_result(cpu_worker, celery_app, store, redis_client):
    from hivemind_celery.task.cancellation import request_stop

    spec, result = submit(
        celery_app,
        store,
        {"main.py": "import time\nopen('partial.txt','w').write('half')\nprint('working', flush=True)\ntime.sleep(300)\n"},
    )
    from hivemind_celery.task.streams import read_output

    deadline = time.monotonic() + 60
    while b"working" not in read_output(redis_client, spec.task_id)[1] and time.monotonic() < deadline:
        time.sleep(0.2)
    request_stop(redis_client, spec.task_id)
    outcome = outcome_of(result, timeout=30)
    assert outcome.status is TaskStatus.CANCELLED
    files = result_files(store, outcome)
    assert files["partial.txt"] == b"half"
    assert "task_stopped.txt" in files


def test_gpu_task_goes_to_gpu_queue_only(start_worker, celery_app, store):
    """No GPU here: the gpu worker cannot give the container a GPU, so the task
    fails there with a reason; what is checked is where it ran."""
    gpu_worker = start_worker("gpu", worker_id=f"gpu-{uuid.uuid4().hex[:6]}")
    try:
        spec, result = submit(celery_app, store, {"main.py": "print('gpu?')"}, gpus=1)
        assert spec.queue.value == "gpu"
        outcome = outcome_of(result)
        assert outcome.worker == gpu_worker.worker_id
    finally:
        gpu_worker.stop()


def test_leftover_containers_reaped_at_start(start_worker, docker_client, celery_app):
    worker_id = f"reap-{uuid.uuid4().hex[:6]}"
    leftover = docker_client.containers.create(
        BUSYBOX_IMAGE, ["sleep", "300"], labels={"hivemind.worker": worker_id, "hivemind.task_id": "leftover-1"}
    )
    worker = start_worker("cpu", worker_id=worker_id)
    try:
        remaining = docker_client.containers.list(all=True, filters={"id": leftover.id})
        assert remaining == []
    finally:
        worker.stop()


def test_a_later_attempt_removes_an_earlier_attempts_orphan(cpu_worker, celery_app, store, redis_client, docker_client):
    """A worker that died mid-task (here: one that never was) left the task's
    container running on this dockerd. Its attempt is on record, so the new
    attempt looks for leftovers of this task id, whichever worker made them,
    and removes them before it starts (a first attempt skips that look)."""
    from hivemind_celery.task.attempts import AttemptLog

    task_id = f"orphan-{uuid.uuid4().hex[:8]}"
    AttemptLog(redis_client, task_id).begin("dead-worker", None)
    orphan = docker_client.containers.run(
        BUSYBOX_IMAGE,
        ["sleep", "300"],
        detach=True,
        network_mode="none",
        labels={"hivemind.worker": "dead-worker", "hivemind.task_id": task_id, "hivemind.role": "main"},
    )
    try:
        _, result = submit(celery_app, store, {"main.py": "print('again')"}, task_id=task_id)
        outcome = outcome_of(result)
        assert outcome.succeeded and "again" in outcome.log_tail
        assert [a.ended for a in outcome.attempts] == ["lost", "finished"]
        assert docker_client.containers.list(all=True, filters={"id": orphan.id}) == []
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            orphan.remove(force=True)


def test_hivemind_run_cli_prints_outcome_json(cpu_worker, redis_url, tmp_path):
    task_dir = tmp_path / "task"
    task_dir.mkdir()
    (task_dir / "main.py").write_text("print('from the cli')\nopen('r.txt','w').write('done')\n")
    out_zip = tmp_path / "result.zip"
    env = worker_env(redis_url, "cli-client")
    proc = subprocess.run(
        [sys.executable, "-m", "hivemind.cli", "run", str(task_dir), "--json", "-o", str(out_zip)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    outcome = json.loads(proc.stdout)
    assert outcome["status"] == "succeeded" and outcome["exit_code"] == 0
    assert "from the cli" in outcome["log_tail"] and outcome["reason"] == ""
    with zipfile.ZipFile(out_zip) as archive:
        assert archive.read("r.txt") == b"done"
    assert os.path.getsize(out_zip) > 0
