"""A whole worker host lost with a checkpointing task on it: the worker, its
dockerd, containerd, the container's shim and the task's own processes all
SIGKILLed at once (a power cut), and another worker of the site, on another
Docker host, resumes the task from its last saved checkpoint.

The second host is tests/fault_kit.py's `SecondDockerd`: a dockerd of the
test's own (its own socket, data and exec roots) on this machine. Worker A
runs its containers there; worker B runs on the machine's main dockerd. What
the lost host had is only on the lost host; what B resumes from is what A's
worker stored in the site's Redis.
"""

from __future__ import annotations

import io
import json
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from hivemind_celery.core.model import TaskStatus
from hivemind_celery.core.settings import Settings
from hivemind_celery.payloads.checkpoint import CheckpointStore
from hivemind_celery.task.outcomes import celery_outcome
from tests.fault_kit import SecondDockerd, wait_until
from tests.services_kit import BUSYBOX_IMAGE, PYTHON_IMAGE, missing
from tests.task.checkpoint_kit import FAST, RIGHT_SUM, STEPS, check_accounting, output_of, result_json, submit

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(600)]

# Its own roots, apart from the fault drills' /tmp/hm-d2: a drill may run beside this test.
HOST_ROOT = Path("/tmp/hm-d2-hostlost")


def host_processes(root: Path) -> list[psutil.Process]:
    """The second host's daemons: dockerd, its containerd and the containers' shims,
    each started with a path under the host's roots on its command line."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(root) in arg for arg in proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def labelled(dockerd: SecondDockerd, kind: str, label: str) -> list[str]:
    listing = subprocess.run(
        ["docker", "-H", dockerd.host, kind, "ls", "-q", *(["-a"] if kind == "container" else []), "--filter", f"label={label}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return listing.stdout.split()


def kill_all(pids: list[int]) -> int:
    """SIGKILL these processes and all their descendants together, gathered first
    so that none is left to notice the others go; how many."""
    procs: dict[int, psutil.Process] = {}
    for pid in pids:
        try:
            main = psutil.Process(pid)
            for proc in [main, *main.children(recursive=True)]:
                procs[proc.pid] = proc
        except psutil.NoSuchProcess:
            pass
    for proc in procs.values():
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(list(procs.values()), timeout=10)
    return len(procs)


def container_pid(dockerd: SecondDockerd, container_id: str) -> int:
    command = ["docker", "-H", dockerd.host, "inspect", "-f", "{{.State.Pid}}", container_id]
    inspect = subprocess.run(command, capture_output=True, text=True, check=True)
    return int(inspect.stdout.strip())


@pytest.fixture
def lost_host() -> Iterator[SecondDockerd]:
    """A second Docker host; after the test, brought back up once to remove what the
    lost task left in its data root, then stopped."""
    dockerd = SecondDockerd(HOST_ROOT)
    try:
        if not dockerd.answers():
            dockerd.start()
        dockerd.ensure_image(PYTHON_IMAGE)
        dockerd.ensure_image(BUSYBOX_IMAGE)
    except (OSError, AssertionError, subprocess.CalledProcessError) as exc:
        dockerd.stop()
        missing(f"cannot run a second dockerd on this machine: {exc}")
    try:
        yield dockerd
    finally:
        for proc in host_processes(HOST_ROOT):  # whatever a failed test left running
            kill_all([proc.pid])
        dockerd.start()
        for kind in ("container", "volume"):
            found = labelled(dockerd, kind, "hivemind.task_id")
            if found:
                subprocess.run(["docker", "-H", dockerd.host, kind, "rm", "-f", *found], capture_output=True)
        dockerd.stop()


def test_worker_host_lost_mid_task_resumes_on_another_host_from_its_last_checkpoint(
    start_worker, celery_app, store, redis_client, redis_url, lost_host: SecondDockerd, docker_client
) -> None:
    victim = start_worker("cpu", concurrency=1, HIVEMIND_CHECKPOINT_INTERVAL="1", DOCKER_HOST=lost_host.host, **FAST)
    spec, result = submit(celery_app, store, "each")
    checkpoints = CheckpointStore(redis_client, Settings(redis_url=redis_url))
    wait_until(
        lambda: (p := checkpoints.latest(spec.task_id)) is not None and (p.progress or 0) >= 0.25,
        120,
        "a checkpoint a quarter of the way",
    )
    [container] = labelled(lost_host, "container", f"hivemind.task_id={spec.task_id}")
    task_pid = container_pid(lost_host, container)
    assert task_pid > 0 and not gone(task_pid)  # the task runs on the second host

    # The host goes at once: the worker's tree, and dockerd, containerd and the shims with theirs
    # (the task's processes are the shim's children).
    daemons = host_processes(HOST_ROOT)
    assert lost_host.pid() in {p.pid for p in daemons} and len(daemons) >= 3, daemons  # dockerd, containerd, a shim
    killed = kill_all([victim.proc.pid, *(p.pid for p in daemons), task_pid])
    assert killed >= 2 + len(daemons) + 1  # the worker, its pool child, the daemons, the task
    everything = [victim.proc.pid, task_pid, *(p.pid for p in daemons)]
    wait_until(lambda: all(gone(pid) for pid in everything), 30, "the lost host's processes gone")
    assert all(gone(p.pid) for p in host_processes(HOST_ROOT))
    assert not lost_host.answers()
    loaded = checkpoints.load(spec.task_id)  # what the site kept of the lost host's work
    assert loaded is not None
    saved, blob = loaded
    assert saved.worker == victim.worker_id and saved.progress is not None and saved.progress >= 0.25
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        [state_name] = [n for n in archive.namelist() if n.endswith("state.json")]
        saved_state = json.loads(archive.read(state_name))

    survivor = start_worker("cpu", concurrency=1, HIVEMIND_CHECKPOINT_INTERVAL="1", **FAST)  # on the main dockerd
    outcome = celery_outcome(result, 240)
    survivor.stop()
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.reason
    done = result_json(store, outcome)
    assert done["sum"] == RIGHT_SUM
    # resumed from exactly the last checkpoint stored before the host went, not from step 1
    assert done["first"] == saved_state["next"] > 1 and saved_state["next"] - 1 >= 0.25 * STEPS
    first, second = outcome.attempts
    assert (first.ended, second.ended) == ("lost", "finished")
    assert first.worker == victim.worker_id and second.worker == survivor.worker_id
    assert first.checkpoints_saved >= 1
    assert second.resumed_from == saved.ref and second.resumed_progress == saved.progress
    check_accounting(outcome)
    assert "resumed from the checkpoint" in output_of(redis_client, spec.task_id)
    # cleared once the outcome is delivered (RunTask.after_return), just after the result
    wait_until(lambda: checkpoints.latest(spec.task_id) is None, 10, "the checkpoint cleared")
    # the resumed run was the main dockerd's: nothing of the task is left there either
    assert not docker_client.containers.list(all=True, filters={"label": f"hivemind.task_id={spec.task_id}"}, sparse=True)
