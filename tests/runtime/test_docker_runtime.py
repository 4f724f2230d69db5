"""The Docker runtime against the real dockerd: lifecycle, statuses, hardening,
kill and reap. Containers are short (busybox where Python does not matter).

The first tests check the container configuration as plain data (GPU requests
among them: there is no GPU here, so for GPUs the request is what can be
checked; nothing is mocked).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import uuid
import zipfile

import docker
import pytest

from hivemind_celery.core.model import TaskOutcome, TaskStatus
from hivemind_celery.payloads.resultzip import build_result_zip
from hivemind_celery.runtime import get_runtime
from hivemind_celery.runtime.base import Job, Started
from hivemind_celery.runtime.docker_config import (
    LABEL_ROLE,
    LABEL_TASK,
    LABEL_WORKER,
    container_kwargs,
    object_name,
)
from hivemind_celery.runtime.docker_driver import DockerRuntime
from hivemind_celery.runtime.follow import container_logs
from hivemind_celery.runtime.images import ImageNotAllowed, ImageUnavailable
from tests.runtime.docker_kit import WORKER, leftovers, make_job, settings, tar_files
from tests.services_kit import BUSYBOX_IMAGE, PYTHON_IMAGE, ROOT


@pytest.fixture(scope="module")
def runtime(docker_client) -> DockerRuntime:
    rt = DockerRuntime(settings(), client=docker_client)
    yield rt
    rt.reap(set())


# --- configuration as data -------------------------------------------------------
def test_container_config_is_hardened() -> None:
    job = make_job({"main.py": ""}, memory_mb=300, cpus=8, pids=99)
    kwargs = container_kwargs(job, settings(), "main", "ws-vol", None, host_cpus=2)
    assert kwargs["cap_drop"] == ["ALL"] and kwargs["security_opt"] == ["no-new-privileges"]
    assert kwargs["read_only"] is True and kwargs["user"] == "1000:1000"
    assert kwargs["network_mode"] == "none"
    assert kwargs["mem_limit"] == kwargs["memswap_limit"] == "300m"
    assert kwargs["nano_cpus"] == 2 * 10**9  # asked for 8, the host has 2
    assert kwargs["pids_limit"] == 99
    assert kwargs["tmpfs"]["/tmp"].startswith("size=16m,") and "noexec" in kwargs["tmpfs"]["/tmp"]
    assert kwargs["labels"][LABEL_WORKER] == WORKER and kwargs["labels"][LABEL_ROLE] == "main"
    assert [m["Target"] for m in kwargs["mounts"]] == ["/workspace"]
    assert {u["Name"] for u in kwargs["ulimits"]} == {"nofile", "nproc"}
    assert kwargs["log_config"]["Config"] == {"max-size": "10m", "max-file": "1"}
    assert "device_requests" not in kwargs


@pytest.mark.parametrize(("gpus", "gpu_memory_mb", "count"), [(2, 0, 2), (0, 4096, 1)])
def test_gpu_jobs_request_gpus(gpus: int, gpu_memory_mb: int, count: int) -> None:
    # No GPU here: what can be checked is the device request sent to dockerd.
    job = make_job({"main.py": ""}, gpus=gpus, gpu_memory_mb=gpu_memory_mb)
    kwargs = container_kwargs(job, settings(), "main", "ws-vol", None, host_cpus=2)
    [request] = kwargs["device_requests"]
    assert request["Count"] == count and request["Capabilities"] == [["gpu"]]


def test_setup_step_gets_no_task_env_and_main_sees_deps() -> None:
    job = make_job({"main.py": "", "requirements.txt": "six\n"}, env={"PIP_INDEX_URL": "http://evil", "A": "1"})
    setup = container_kwargs(job, settings(), "setup", "ws", "deps", 2, has_ca=True)
    main = container_kwargs(job, settings(), "main", "ws", "deps", 2)
    assert "PIP_INDEX_URL" not in setup["environment"] and setup["environment"]["PIP_CERT"]
    # the set-up step's way out is its proxy (tests/runtime/test_setup_step.py); the main step has none
    assert setup["network_mode"] == "none" and main["network_mode"] == "none"
    assert main["environment"]["A"] == "1" and main["environment"]["PYTHONPATH"] == "/opt/hivemind/deps"
    assert [m["ReadOnly"] for m in main["mounts"]] == [False, True]  # deps read-only in main


def test_names_are_docker_safe() -> None:
    assert object_name("host/with spaces:1", "task.1", "main") == "hm-host-with-spaces-1-task.1-main"


# --- runs --------------------------------------------------------------------------
@pytest.mark.docker
def test_success_streams_output_and_returns_files(runtime, docker_client) -> None:
    # the sleep keeps the container alive long enough for on_start to see its pid, where it is asked
    job = make_job({"run.sh": "echo hello; mkdir -p out; echo 42 > out/answer.txt; echo done >&2; sleep 1"})
    chunks: list[bytes] = []
    started: list[Started] = []
    result = runtime.run(job, on_output=chunks.append, on_start=started.append)
    assert result.status is TaskStatus.SUCCEEDED and result.exit_code == 0 and result.reason == ""
    assert "hello" in result.log_tail and "done" in result.log_tail
    assert b"hello" in b"".join(chunks)
    assert started and started[0].container_id
    # The step's own cgroup (dockerd's cgroupfs driver, as root) will do; else its PID.
    assert started[0].cgroup is not None or started[0].pid > 0
    files = tar_files(result.workspace_tar)
    assert files["out/answer.txt"] == b"42\n" and "run.sh" in files
    assert leftovers(docker_client, job.spec.task_id) == ([], [])
    outcome = TaskOutcome(
        task_id=job.spec.task_id, status=result.status, exit_code=0, started_at=result.started_at, finished_at=result.finished_at
    )
    zipped = build_result_zip(result.workspace_tar, outcome, node="n", logs=result.log_tail, stopped=False, max_bytes=1 << 20)
    with zipfile.ZipFile(io.BytesIO(zipped)) as archive:
        assert archive.read("out/answer.txt") == b"42\n"


@pytest.mark.docker
def test_nonzero_exit_is_failed_with_the_code(runtime) -> None:
    result = runtime.run(make_job({"run.sh": "echo oops; exit 3"}))
    assert result.status is TaskStatus.FAILED and result.exit_code == 3
    assert result.reason == "task failed with exit code 3"


@pytest.mark.docker
def test_timeout(runtime, docker_client) -> None:
    job = make_job({"run.sh": "echo start; sleep 60"}, timeout=1.5)
    result = runtime.run(job)
    assert result.status is TaskStatus.TIMED_OUT and "timed out after 1.5 s" in result.reason
    assert "start" in result.log_tail
    assert leftovers(docker_client, job.spec.task_id) == ([], [])


@pytest.mark.docker
def test_stop_request_cancels(runtime) -> None:
    seen = threading.Event()
    result = runtime.run(
        make_job({"run.sh": "echo ready; sleep 60"}, timeout=60), on_output=lambda chunk: seen.set(), should_stop=seen.is_set
    )
    assert result.status is TaskStatus.CANCELLED and result.stopped
    assert result.reason == "stopped by request"


@pytest.mark.docker
def test_memory_hog_is_oom_killed(runtime) -> None:
    code = "chunks = []\nwhile True:\n    chunks.append(bytes([1]) * (8 << 20))\n"
    result = runtime.run(make_job({"main.py": code}, image=PYTHON_IMAGE, memory_mb=64))
    assert result.status is TaskStatus.OOM_KILLED
    assert "out of memory (limit 64 MiB)" in result.reason


@pytest.mark.docker
def test_fork_bomb_is_contained_by_the_pids_limit(runtime, docker_client) -> None:
    job = make_job({"run.sh": "f() { f | f & }; f; while :; do :; done"}, timeout=3, pids=32, cpus=0.25)
    result = runtime.run(job)
    # It never ends by itself and the timeout ends it; on a loaded host the
    # bomb's own shell may die of a refused fork first (exit 2): contained too.
    assert result.status is TaskStatus.TIMED_OUT or (result.status, result.exit_code) == (TaskStatus.FAILED, 2)
    assert "can't fork" in result.log_tail  # forks were refused inside the container
    assert leftovers(docker_client, job.spec.task_id) == ([], [])
    assert subprocess.run(["true"]).returncode == 0  # the host can still start processes


@pytest.mark.docker
def test_hardening_seen_from_inside(runtime) -> None:
    probe = r"""
import json, os, shutil, socket, subprocess
facts = {"uid": os.getuid(), "gid": os.getgid(), "net": sorted(os.listdir("/sys/class/net"))}
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
facts["cap_eff"] = status["CapEff"].strip(); facts["no_new_privs"] = status["NoNewPrivs"].strip()
try:
    open("/etc/evil", "w"); facts["etc"] = "writable"
except OSError as exc:
    facts["etc"] = exc.strerror
shutil.copy("/bin/true", "/tmp/t"); os.chmod("/tmp/t", 0o755)
try:
    subprocess.run(["/tmp/t"]); facts["tmp_exec"] = "ran"
except OSError as exc:
    facts["tmp_exec"] = exc.strerror
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2); facts["connect"] = "ok"
except OSError as exc:
    facts["connect"] = type(exc).__name__
print("FACTS" + json.dumps(facts))
"""
    result = runtime.run(make_job({"main.py": probe}, image=PYTHON_IMAGE))
    assert result.status is TaskStatus.SUCCEEDED, result.log_tail
    facts = json.loads(result.log_tail.split("FACTS", 1)[1])
    assert facts["uid"] == 1000 and facts["gid"] == 1000
    assert facts["net"] == ["lo"] and facts["connect"] != "ok"
    assert facts["cap_eff"] == "0000000000000000" and facts["no_new_privs"] == "1"
    assert facts["etc"] == "Read-only file system"
    assert facts["tmp_exec"] == "Permission denied"  # /tmp is noexec


@pytest.mark.docker
def test_tmp_size_is_capped(runtime) -> None:
    result = runtime.run(make_job({"run.sh": "dd if=/dev/zero of=/tmp/big bs=1M count=64 && echo wrote-all"}))
    assert result.status is TaskStatus.FAILED
    assert "No space left on device" in result.log_tail and "wrote-all" not in result.log_tail


@pytest.mark.docker
def test_output_tail_is_bounded_but_all_output_is_forwarded(docker_client) -> None:
    rt = DockerRuntime(settings(log_tail_bytes=1000), client=docker_client)
    seen: list[bytes] = []
    result = rt.run(make_job({"run.sh": "seq 1 20000"}), on_output=seen.append)
    assert result.status is TaskStatus.SUCCEEDED
    everything = b"".join(seen)
    assert everything.endswith(b"19999\n20000\n") and everything.startswith(b"1\n2\n")
    assert result.log_tail.endswith("19999\n20000\n")
    kept = result.log_tail.split("\n", 1)[1]  # after the "[... N earlier bytes dropped]" line
    assert len(kept.encode()) <= 1000 and "earlier bytes dropped" in result.log_tail


@pytest.mark.docker
def test_kill_from_another_process(runtime, docker_client) -> None:
    job = make_job({"run.sh": "echo up; sleep 120"}, timeout=120)
    started = threading.Event()
    results = []
    runner = threading.Thread(target=lambda: results.append(runtime.run(job, on_start=lambda _: started.set())))
    runner.start()
    assert started.wait(30)
    killer = (
        "from hivemind_celery.runtime.docker_driver import DockerRuntime\n"
        "from hivemind_celery.core.settings import Settings\n"
        f"print(DockerRuntime(Settings(worker_id={WORKER!r})).kill({job.spec.task_id!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", killer], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    # the container at least; the run's own clean-up may beat kill to the volume
    assert int(done.stdout) >= 1
    assert leftovers(docker_client, job.spec.task_id)[0] == []
    runner.join(60)
    assert not runner.is_alive()
    [result] = results
    assert result.status is TaskStatus.CANCELLED and result.stopped
    assert leftovers(docker_client, job.spec.task_id) == ([], [])


@pytest.mark.docker
def test_reap_removes_only_this_workers_leftovers_not_kept(runtime, docker_client) -> None:
    made = []
    for worker, task in ((WORKER, "old-1"), (WORKER, "keep-1"), ("someone-else", "old-2")):
        labels = {LABEL_WORKER: worker, LABEL_TASK: task, LABEL_ROLE: "main"}
        made.append(docker_client.volumes.create(labels=labels))
        made.append(docker_client.containers.create(BUSYBOX_IMAGE, ["true"], labels=labels))
    try:
        assert runtime.reap({"keep-1"}) == 2
        remaining = {c.labels[LABEL_TASK] for c in docker_client.containers.list(all=True) if LABEL_TASK in c.labels}
        assert "old-1" not in remaining and {"keep-1", "old-2"} <= remaining
        assert leftovers(docker_client, "old-1") == ([], [])
    finally:
        for thing in made:
            try:
                thing.remove(force=True)
            except Exception:  # noqa: BLE001 - already gone is fine here
                pass


@pytest.mark.docker
def test_logs_are_read_without_an_inspect_per_call() -> None:
    """The follower reads a container's output from the Engine API itself: the
    same bytes as the docker SDK's logs, without the SDK's inspect before each
    call (counted with a requests response hook on the client's session), and a
    follow stream stays open through a quiet spell longer than the client's
    timeout, as the SDK's does."""
    client = docker.from_env(timeout=2)
    calls: list[str] = []
    client.api.hooks["response"].append(lambda response, *_, **__: calls.append(response.request.path_url.split("?")[0]))
    script = "echo out; echo err >&2; sleep 3; echo last"
    container = client.containers.run(BUSYBOX_IMAGE, ["sh", "-c", script], detach=True, network_mode="none")
    try:
        calls.clear()
        streamed = b"".join(container_logs(container, follow=True))
        # stdout and stderr reach the log by separate copies: their order may swap
        assert sorted(streamed.splitlines()) == [b"err", b"last", b"out"] and streamed.endswith(b"last\n")
        assert container_logs(container) == streamed
        assert container_logs(container, tail=1) == b"last\n"
        assert calls and all(path.endswith("/logs") for path in calls), calls
        assert container.logs() == streamed  # the SDK's own reading agrees
    finally:
        container.remove(force=True)
    with pytest.raises(docker.errors.NotFound):
        container_logs(container)
    client.close()


@pytest.mark.docker
def test_leftovers_of_an_earlier_attempt_do_not_block_a_rerun(runtime, docker_client) -> None:
    job = make_job({"run.sh": "echo again"})
    task_id = job.spec.task_id
    docker_client.containers.create(
        BUSYBOX_IMAGE,
        ["true"],
        name=object_name(WORKER, task_id, "main"),
        labels={LABEL_WORKER: WORKER, LABEL_TASK: task_id, LABEL_ROLE: "main"},
    )
    result = runtime.run(job)
    assert result.status is TaskStatus.SUCCEEDED and "again" in result.log_tail


@pytest.mark.docker
def test_missing_and_forbidden_images(docker_client) -> None:
    rt = DockerRuntime(settings(allowed_images=[BUSYBOX_IMAGE, "hivemind-not-built:v0"]), client=docker_client)
    with pytest.raises(ImageUnavailable) as caught:
        rt.run(make_job({"run.sh": "true"}, image="hivemind-not-built:v0"))
    assert "image 'hivemind-not-built:v0' is not present on this worker and could not be pulled" in str(caught.value)
    with pytest.raises(ImageNotAllowed, match="image 'evil:latest' is not allowed"):
        rt.run(make_job({"run.sh": "true"}, image="evil:latest"))


@pytest.mark.docker
def test_requirements_setup_step_installs_outside_the_workspace(runtime) -> None:
    files = {"requirements.txt": "six==1.16.0\n", "main.py": "import six\nprint('six', six.__version__, six.__file__)\n"}
    result = runtime.run(make_job(files, image=PYTHON_IMAGE, memory_mb=256, timeout=60))
    if result.status is not TaskStatus.SUCCEEDED and "Successfully installed" not in result.log_tail:
        pytest.skip(f"PyPI not reachable from containers here: {result.reason}: {result.log_tail[-500:]}")
    assert result.status is TaskStatus.SUCCEEDED, result.log_tail
    assert "six 1.16.0 /opt/hivemind/deps/six.py" in result.log_tail
    assert set(tar_files(result.workspace_tar)) == set(files)  # installed packages stay out


@pytest.mark.docker
def test_failed_setup_step_fails_the_task_without_running_it(runtime) -> None:
    files = {"requirements.txt": "six==1.16.0\n", "main.py": "print('MAIN RAN')\n"}
    job = make_job(files, image=PYTHON_IMAGE, memory_mb=256, timeout=60)
    job = Job(**{**job.__dict__, "setup_network": False})  # pip cannot reach PyPI
    result = runtime.run(job)
    assert result.status is TaskStatus.FAILED
    assert result.reason.startswith(
        "set-up step (pip install -r requirements.txt) failed: the package index https://pypi.org/simple could not be reached"
    ), result.reason
    assert "MAIN RAN" not in result.log_tail
    assert set(tar_files(result.workspace_tar)) == set(files)


@pytest.mark.docker
def test_get_runtime_chooses_by_settings() -> None:
    assert get_runtime(settings(runtime="docker")).name == "docker"


def test_image_removed_after_the_presence_check_fails_the_task_with_a_reason(docker_client) -> None:
    """Presence is remembered for a minute; an image deleted in that window
    fails the one task clearly and is checked afresh for the next."""
    name = f"hivemind-test-ephemeral:{uuid.uuid4().hex[:8]}"
    docker_client.images.get(BUSYBOX_IMAGE).tag(name)
    rt = DockerRuntime(settings(allowed_images=[BUSYBOX_IMAGE, name]), docker_client)
    assert rt.run(make_job({"run.sh": "exit 0"}, image=name)).status is TaskStatus.SUCCEEDED
    docker_client.images.remove(name)
    result = rt.run(make_job({"run.sh": "exit 0"}, image=name))
    assert result.status is TaskStatus.FAILED
    assert "disappeared before the task started" in result.reason
    with pytest.raises(ImageUnavailable, match="not present on this worker and could not be pulled"):
        rt.run(make_job({"run.sh": "exit 0"}, image=name))
