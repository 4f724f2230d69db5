"""The process runtime (HIVEMIND_RUNTIME=process, for machines without Docker):
real subprocesses on this machine, real rlimits and process groups, and one real
`celery worker` running with it. Nothing here needs Docker."""

from __future__ import annotations

import io
import logging
import tarfile
import threading
import time
import uuid

import psutil
import pytest

from hivemind_celery.core.model import TaskSpec, TaskStatus
from hivemind_celery.core.settings import Settings
from hivemind_celery.payloads import workspace
from hivemind_celery.runtime import get_runtime
from hivemind_celery.runtime.base import Job, Started
from hivemind_celery.runtime.process import ProcessRuntime
from hivemind_celery.task.outcomes import celery_outcome
from tests.services_kit import make_zip

PAYLOAD = "sha256:" + "0" * 64


@pytest.fixture
def runtime(tmp_path) -> ProcessRuntime:  # noqa: ANN001
    return ProcessRuntime(
        Settings(worker_id=f"test-proc-{uuid.uuid4().hex[:6]}", runtime="process", runtime_dir=str(tmp_path / "rt"), stop_grace=1)
    )


def make_job(files: dict[str, str], timeout: float = 20, **spec: object) -> Job:
    data = make_zip(files)
    manifest = workspace.inspect_zip(data)
    task_spec = TaskSpec(task_id=f"t-{uuid.uuid4().hex[:10]}", payload=PAYLOAD, **{"memory_mb": 256, "cpus": 1.0, **spec})
    return Job(
        spec=task_spec,
        image="unused",
        command=workspace.entry_command(manifest),
        workspace_tar=workspace.zip_to_tar(data, manifest),
        timeout=timeout,
        setup_command=workspace.setup_command(manifest),
    )


def files_of(workspace_tar: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(workspace_tar)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_choosing_it_warns_loudly(tmp_path, caplog) -> None:  # noqa: ANN001
    with caplog.at_level(logging.WARNING):
        chosen = get_runtime(Settings(runtime="process", runtime_dir=str(tmp_path)))
    assert chosen.name == "process"
    assert "WITHOUT isolation" in caplog.text


def test_success_streams_output_returns_files_and_hides_the_workers_environment(runtime, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("HIVEMIND_PASSWORD", "worker-secret")
    monkeypatch.setenv("REDIS_URL", "redis://:pw@host/0")
    seen: list[bytes] = []
    started: list[Started] = []
    job = make_job(
        {
            "main.py": "import os, pathlib\nprint('hello', sorted(k for k in os.environ))\n"
            "pathlib.Path('out').mkdir()\npathlib.Path('out/x.txt').write_text('42')\n"
        },
        env={"MY_SETTING": "on"},
    )
    result = runtime.run(job, on_output=seen.append, on_start=started.append)
    assert result.status is TaskStatus.SUCCEEDED, result.reason
    assert b"hello" in b"".join(seen) and "hello" in result.log_tail
    assert "MY_SETTING" in result.log_tail and "HIVEMIND_TASK_ID" in result.log_tail
    assert "HIVEMIND_PASSWORD" not in result.log_tail and "REDIS_URL" not in result.log_tail
    assert files_of(result.workspace_tar)["out/x.txt"] == b"42"
    assert started and started[0].pid > 0 and started[0].container_id is None
    assert list((runtime.root).iterdir()) == []  # the task's directory is gone


def test_nonzero_exit_names_the_code(runtime) -> None:  # noqa: ANN001
    result = runtime.run(make_job({"main.py": "import sys\nsys.exit(3)\n"}))
    assert (result.status, result.exit_code) == (TaskStatus.FAILED, 3)
    assert "exit code 3" in result.reason


def test_timeout_kills_the_whole_process_group(runtime) -> None:  # noqa: ANN001
    script = (
        "import subprocess, time\n"
        "child = subprocess.Popen(['sleep', '300'])\n"
        "print('child', child.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    result = runtime.run(make_job({"main.py": script}, timeout=2))
    assert result.status is TaskStatus.TIMED_OUT
    child = int(result.log_tail.split("child ", 1)[1].split()[0])
    deadline = time.monotonic() + 5
    while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the task's child outlived the timeout"
        time.sleep(0.1)


def test_memory_limit_is_enforced(runtime) -> None:  # noqa: ANN001
    result = runtime.run(make_job({"main.py": "x = bytearray(600 * 1024 * 1024)\nprint('allocated')\n"}, memory_mb=200))
    assert result.status is TaskStatus.FAILED
    assert "MemoryError" in result.log_tail and "allocated" not in result.log_tail


def test_stop_request_and_kill_from_another_runtime(runtime, tmp_path) -> None:  # noqa: ANN001
    stop = threading.Event()
    job = make_job({"main.py": "import time\nprint('up', flush=True)\ntime.sleep(300)\n"})
    timer = threading.Timer(1.5, stop.set)
    timer.start()
    result = runtime.run(job, should_stop=stop.is_set)
    assert result.status is TaskStatus.CANCELLED and result.stopped

    # kill() from another process's runtime (same runtime dir) ends a running task.
    other = ProcessRuntime(runtime.settings)
    job = make_job({"main.py": "import time\nprint('up', flush=True)\ntime.sleep(300)\n"})
    outcome: list = []
    runner = threading.Thread(target=lambda: outcome.append(runtime.run(job)))
    runner.start()
    deadline = time.monotonic() + 10
    while not (runtime.root / job.spec.task_id / "pid.json").exists():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert other.kill(job.spec.task_id) == 1
    runner.join(timeout=10)
    assert outcome and outcome[0].status is not TaskStatus.SUCCEEDED and outcome[0].stopped


@pytest.mark.redis
def test_a_celery_worker_runs_tasks_with_it(start_worker, celery_app, redis_client, redis_url, tmp_path) -> None:  # noqa: ANN001
    from hivemind_celery.core.model import TASK_NAME
    from hivemind_celery.payloads.store import PayloadStore

    worker = start_worker(HIVEMIND_RUNTIME="process", HIVEMIND_RUNTIME_DIR=str(tmp_path / "worker-rt"))
    store = PayloadStore(redis_client, Settings(redis_url=redis_url))
    spec = TaskSpec(
        task_id=f"proc-{uuid.uuid4().hex[:10]}", payload=store.put(make_zip({"main.py": "print('ran without docker')\n"}))
    )
    result = celery_app.send_task(TASK_NAME, args=[spec.model_dump(mode="json")], task_id=spec.task_id, queue="cpu")
    outcome = celery_outcome(result, 120)
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.reason
    assert "ran without docker" in outcome.log_tail
    assert "WITHOUT isolation" in worker.log_path.read_text()


def test_the_checkpoint_directory_is_restored_read_while_running_and_left_out_of_the_result(runtime) -> None:  # noqa: ANN001
    """The contract under the process runtime: the restored checkpoint is there at start, the worker
    reads the directory while the task runs and once it ended, and the result copy leaves it out."""
    from hivemind_celery.payloads.checkpoint import CHECKPOINT_DIR, pack, restorable

    saved = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(saved, "w") as archive:
        archive.writestr("state", "41")
    settings = Settings(checkpoint_max_bytes=1024 * 1024)
    task = (
        "import os, time\n"
        "d = os.environ['HIVEMIND_CHECKPOINT_DIR']\n"
        "n = int(open(os.path.join(d, 'state')).read()) + 1\n"
        "open(os.path.join(d, 'state.tmp'), 'w').write(str(n))\n"
        "os.replace(os.path.join(d, 'state.tmp'), os.path.join(d, 'state'))\n"
        "time.sleep(2)\n"
        "open('out.txt', 'w').write(str(n))\n"
    )
    data = make_zip({"main.py": task})
    manifest = workspace.inspect_zip(data)
    job = make_job({"main.py": task})
    job = Job(
        spec=job.spec,
        image="unused",
        command=job.command,
        timeout=20,
        workspace_tar=workspace.zip_to_tar(
            data, manifest, extra=[(CHECKPOINT_DIR, saved.getvalue(), restorable(saved.getvalue(), settings))]
        ),
    )
    while_running: list[bytes | None] = []

    def on_start(started: Started) -> None:
        assert started.read_checkpoint is not None
        deadline = time.monotonic() + 10
        state = None
        while state != b"42" and time.monotonic() < deadline:  # until the task has written its step
            time.sleep(0.1)
            copy = started.read_checkpoint()
            packed = pack(copy.tar, copy.skipped, 1024) if copy else None
            state = zipfile.ZipFile(io.BytesIO(packed)).read("state") if packed else None
        while_running.append(state)

    result = runtime.run(job, on_start=on_start)
    assert result.status is TaskStatus.SUCCEEDED, result.reason
    assert files_of(result.workspace_tar or b"") == {"main.py": task.encode(), "out.txt": b"42"}
    assert result.checkpoint is not None and files_of(result.checkpoint.tar) == {"state": b"42"}
    assert while_running == [b"42"]
