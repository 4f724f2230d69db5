"""Escape and abuse attempts with real containers through a real worker: each
is contained, and the outcome says what happened.

Already covered in tests/task/test_worker.py and not repeated here: the shell fork
bomb (test_fork_bomb_is_contained), the memory hog reported oom_killed
(test_memory_hog_is_oom_killed), and the basic sandbox probe — uid 1000,
read-only /etc, no route to 1.1.1.1, only `lo` (test_sandbox_no_network_readonly_root_non_root).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import psutil
import pytest

from hivemind_celery.core.model import TASK_NAME, TaskOutcome, TaskSpec, TaskStatus
from hivemind_celery.task.cancellation import request_stop
from hivemind_celery.task.outcomes import celery_outcome
from hivemind_celery.task.streams import read_output
from tests.services_kit import docker_leftovers, make_zip

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]

TMP_CAP_MB = 32
RESULT_CAP = 16 * 1024 * 1024
STOP_GRACE = 2
WORKSPACE_CAP_MB = 64
WORKSPACE_MAX_FILES = 2000


@pytest.fixture(scope="module")
def worker(start_worker):
    return start_worker(
        "cpu",
        HIVEMIND_TMPFS_SIZE=f"{TMP_CAP_MB}m",
        HIVEMIND_STOP_GRACE=str(STOP_GRACE),
        HIVEMIND_RESULT_MAX_BYTES=str(RESULT_CAP),
        HIVEMIND_WORKSPACE_MAX_MB=str(WORKSPACE_CAP_MB),
        HIVEMIND_WORKSPACE_MAX_FILES=str(WORKSPACE_MAX_FILES),
        HIVEMIND_WORKSPACE_CHECK_INTERVAL="0.5",
    )


def run(celery_app, store, files: dict[str, str], timeout_s: float = 180, **spec_fields) -> tuple[TaskSpec, object]:
    spec = TaskSpec(task_id=f"e-{uuid.uuid4().hex[:10]}", payload=store.put(make_zip(files)), **spec_fields)
    result = celery_app.send_task(TASK_NAME, args=[spec.model_dump(mode="json")], task_id=spec.task_id, queue="cpu")
    return spec, result


def outcome_of(result, timeout: float = 180) -> TaskOutcome:
    return celery_outcome(result, timeout)


def report(store, outcome: TaskOutcome, name: str = "probe.json") -> dict:
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(store.get(outcome.result_ref))) as archive:
        return json.loads(archive.read(name))


def containers_of(docker_client, task_id: str) -> list:
    """The task's containers once gone (or after 10 s): removed just after the outcome."""
    return docker_leftovers(docker_client, f"hivemind.task_id={task_id}")[0]


FILL = """
import errno, json, os, sys
target, written, error = sys.argv[1], 0, None
chunk = b"\\1" * (1024 * 1024)
try:
    with open(target, "wb") as handle:
        for _ in range(4096):  # up to 4 GiB, far past any cap
            handle.write(chunk); handle.flush(); written += len(chunk)
except OSError as exc:
    error = errno.errorcode.get(exc.errno, str(exc.errno))
os.remove(target)
json.dump({"written_mb": written // (1024 * 1024), "error": error}, open("probe.json", "w"))
print("filled", written, error)
"""


# /dev/shm is Docker's default 64 MiB tmpfs (the runtime sets no shm size).
@pytest.mark.parametrize(("target", "cap_mb"), [("/tmp/fill", TMP_CAP_MB), ("/dev/shm/fill", 64)], ids=["tmp", "dev-shm"])
def test_filling_a_disk_stops_at_its_cap(worker, celery_app, store, target: str, cap_mb: int) -> None:
    _, result = run(celery_app, store, {"fill.py": FILL}, command=["python3", "fill.py", target], memory_mb=512)
    outcome = outcome_of(result)
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.reason
    probe = report(store, outcome)
    assert probe["error"] == "ENOSPC", probe
    assert probe["written_mb"] <= cap_mb, probe


GROW = """
import sys, time
if sys.argv[1] == "bytes":
    with open("grow.bin", "wb") as handle:
        for i in range(2048):  # 2 GiB at no more than ~200 MiB/s
            handle.write(b"\\1" * (1024 * 1024)); handle.flush(); time.sleep(0.005)
else:
    for i in range(20000):
        open(f"f{i}", "w").close()
        if i % 100 == 0:
            time.sleep(0.01)
print("done", flush=True)
"""


@pytest.mark.parametrize(
    ("kind", "cap_variable"), [("bytes", "HIVEMIND_WORKSPACE_MAX_MB"), ("files", "HIVEMIND_WORKSPACE_MAX_FILES")]
)
def test_filling_the_workspace_kills_the_task_at_its_cap(
    worker, celery_app, store, docker_client, kind: str, cap_variable: str
) -> None:
    """/workspace is a Docker volume that overlay2 on ext4 cannot size-cap; the
    worker measures it while the task runs and kills the task past its cap."""
    spec, result = run(celery_app, store, {"grow.py": GROW}, command=["python3", "grow.py", kind], memory_mb=512)
    outcome = outcome_of(result)
    assert outcome.status is TaskStatus.FAILED, outcome
    assert cap_variable in outcome.reason, outcome.reason
    assert "done" not in outcome.log_tail  # stopped long before it finished
    print(f"\nworkspace cap ({kind}): {outcome.reason}")  # the figure docs/RELIABILITY.md quotes
    assert docker_leftovers(docker_client, f"hivemind.task_id={spec.task_id}") == ([], [])
    _, after = run(celery_app, store, {"main.py": "print('still serving')"})
    assert outcome_of(after).succeeded


def test_filling_the_workspace_returns_no_more_than_the_result_cap(worker, celery_app, store) -> None:
    """Within the workspace cap, what comes back is bounded too: the copy stops
    at HIVEMIND_RESULT_MAX_BYTES and names the files it left out."""
    writer = (
        "import os\nfor i in range(3):\n    open(f'big{i}.bin', 'wb').write(os.urandom(10 * 1024 * 1024))\n"
        "print('wrote 30 MiB')\n"
    )
    _, result = run(celery_app, store, {"main.py": writer})
    outcome = outcome_of(result)
    assert outcome.succeeded, outcome.reason
    import io
    import zipfile

    data = store.get(outcome.result_ref)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        kept = [i for i in archive.infolist() if i.filename.startswith("big")]
        log_text = archive.read("execution_log.txt").decode()
    assert sum(i.file_size for i in kept) <= RESULT_CAP
    assert len(kept) == 1, [i.filename for i in kept]
    skipped = {f"big{i}.bin" for i in range(3)} - {i.filename for i in kept}
    assert all(name in log_text for name in skipped), log_text  # each left-out file is named


def test_nested_zip_bomb_unpacked_by_the_task_hits_the_tmp_cap(worker, celery_app, store) -> None:
    """The worker does not open zips inside the task zip; a task that does is
    bounded by the disk it unpacks to, and fails with the error it got."""
    import io
    import zipfile

    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(4):
            archive.writestr(f"zeros{i}.bin", bytes(100 * 1024 * 1024))  # 400 MiB in ~400 KiB
    files = {"main.py": "import zipfile\nzipfile.ZipFile('inner.zip').extractall('/tmp/out')\n", "inner.zip": inner.getvalue()}
    _, result = run(celery_app, store, files)
    outcome = outcome_of(result)
    assert outcome.status is TaskStatus.FAILED
    assert "No space left on device" in outcome.log_tail


PROBE = r"""
import json, os, socket, subprocess, sys, time
host_marker, host_redis_port = sys.argv[1], int(sys.argv[2])
r = {}
def attempt(name, fn):
    try:
        r[name] = fn()
    except Exception as exc:
        r[name] = f"{type(exc).__name__}: {exc}"
r["proc1"] = open("/proc/1/cmdline", "rb").read().replace(b"\0", b" ").decode()
r["host_marker_visible"] = os.path.exists(host_marker)
attempt("shadow", lambda: open("/etc/shadow").read()[:20])
r["docker_sock"] = [p for p in ("/var/run/docker.sock", "/run/docker.sock") if os.path.exists(p)]
attempt("write_usr", lambda: open("/usr/evil", "w").write("x"))
attempt("write_root", lambda: open("/evil", "w").write("x"))
attempt("write_home_outside", lambda: open("/opt/evil", "w").write("x"))
attempt("exec_tmp", lambda: (open("/tmp/x.sh", "w").write("#!/bin/sh\necho ran\n"), os.chmod("/tmp/x.sh", 0o755),
                             subprocess.run(["/tmp/x.sh"], capture_output=True).returncode)[2])
attempt("dns", lambda: socket.gethostbyname("pypi.org"))
def connect(host, port):
    s = socket.socket(); s.settimeout(2); s.connect((host, port)); return "connected"
attempt("gateway", lambda: connect("172.17.0.1", 2375))
attempt("host_redis", lambda: connect("127.0.0.1", host_redis_port))
status = {l.split(":")[0]: l.split(":")[1].strip() for l in open("/proc/self/status") if ":" in l}
r["no_new_privs"], r["cap_eff"] = status["NoNewPrivs"], status["CapEff"]
su = subprocess.Popen(["/usr/bin/su", "root", "-c", "id"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                      stderr=subprocess.STDOUT)
time.sleep(1)
attempt("setuid_uids", lambda: [l.split()[1:] for l in open(f"/proc/{su.pid}/status") if l.startswith("Uid")][0])
su.kill(); su.wait()
attempt("mount", lambda: subprocess.run(["/usr/bin/mount", "-t", "tmpfs", "none", "/tmp"],
                                        capture_output=True, text=True).stderr.strip())
json.dump(r, open("probe.json", "w"), indent=1)
"""


def test_host_is_out_of_reach(worker, celery_app, store, redis_url, tmp_path: Path) -> None:
    marker = tmp_path / f"host-secret-{uuid.uuid4().hex}"
    marker.write_text("host only")
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    _, result = run(celery_app, store, {"probe.py": PROBE}, command=["python3", "probe.py", str(marker), port])
    outcome = outcome_of(result)
    assert outcome.succeeded, outcome.reason
    probe = report(store, outcome)
    assert "docker-init" in probe["proc1"] or "tini" in probe["proc1"], probe["proc1"]  # the container's PID 1
    assert probe["host_marker_visible"] is False
    assert probe["shadow"].startswith("PermissionError"), probe["shadow"]
    assert probe["docker_sock"] == []
    for key in ("write_usr", "write_root", "write_home_outside"):
        assert "Read-only file system" in probe[key], (key, probe[key])
    assert probe["exec_tmp"].startswith("PermissionError"), probe["exec_tmp"]  # /tmp is noexec
    assert probe["dns"].startswith("gaierror"), probe["dns"]
    assert probe["gateway"].startswith("OSError"), probe["gateway"]  # no route: only lo
    assert probe["host_redis"].startswith("ConnectionRefusedError"), probe["host_redis"]  # own loopback
    # setuid: no-new-privileges keeps a setuid-root binary at uid 1000; no capabilities at all.
    assert probe["no_new_privs"] == "1" and int(probe["cap_eff"], 16) == 0
    assert probe["setuid_uids"] == ["1000", "1000", "1000", "1000"], probe["setuid_uids"]
    assert "must be superuser" in probe["mount"], probe["mount"]


SPIN = """
import multiprocessing, time
def spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
if __name__ == "__main__":
    with multiprocessing.Pool(4) as pool:
        pool.map(spin, [8] * 4)
"""


def test_cpu_spinner_gets_no_more_than_its_quota(worker, celery_app, store) -> None:
    """Four spinning processes on a 0.5-core quota: the measured usage (in the
    outcome) stays at the quota, where unthrottled they would take every core."""
    _, result = run(celery_app, store, {"main.py": SPIN}, cpus=0.5)
    outcome = outcome_of(result)
    assert outcome.succeeded, outcome.reason
    usage = outcome.usage
    assert usage is not None and usage.samples > 0 and usage.cpu_seconds > 0, usage
    cores_used = usage.cpu_seconds / outcome.duration
    print(
        f"spinner: {usage.cpu_seconds:.2f} cpu-s over {outcome.duration:.2f} s = {cores_used:.3f} cores "
        f"(quota 0.5); cpu_percent {usage.cpu_percent:.1f}"
    )
    assert cores_used <= 0.5 * 1.1, cores_used  # CFS quota, with 10% for sampling edges


IGNORE_TERM = """
import signal, time
def ignored(*_):
    print("got SIGTERM, ignoring it", flush=True)
signal.signal(signal.SIGTERM, ignored)
print("up", flush=True)
while True:
    time.sleep(1)
"""


def test_task_ignoring_sigterm_is_killed_after_the_grace_on_timeout(worker, celery_app, store, docker_client) -> None:
    spec, result = run(celery_app, store, {"main.py": IGNORE_TERM}, timeout=3)
    outcome = outcome_of(result)
    assert outcome.status is TaskStatus.TIMED_OUT, outcome.reason
    assert "got SIGTERM, ignoring it" in outcome.log_tail  # it was asked first
    assert containers_of(docker_client, spec.task_id) == []


def test_task_ignoring_sigterm_is_killed_after_the_grace_on_stop(worker, celery_app, store, redis_client, docker_client) -> None:
    spec, result = run(celery_app, store, {"main.py": IGNORE_TERM})
    deadline = time.monotonic() + 60
    while b"up" not in read_output(redis_client, spec.task_id)[1] and time.monotonic() < deadline:
        time.sleep(0.2)
    request_stop(redis_client, spec.task_id)
    outcome = outcome_of(result, timeout=60)
    assert outcome.status is TaskStatus.CANCELLED, outcome.reason
    assert "got SIGTERM, ignoring it" in outcome.log_tail
    assert containers_of(docker_client, spec.task_id) == []


DAEMON = """
import os, sys, time
marker = sys.argv[1]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "3600", marker])  # the daemon, findable by its argv
    os._exit(0)
time.sleep(1)
print("parent exits; daemon left behind", flush=True)
"""


def test_daemon_left_behind_does_not_survive_its_container(worker, celery_app, store, docker_client) -> None:
    marker = f"hm-daemon-{uuid.uuid4().hex}"
    spec, result = run(celery_app, store, {"d.py": DAEMON}, command=["python3", "d.py", marker])
    outcome = outcome_of(result)
    assert outcome.succeeded, outcome.reason
    assert containers_of(docker_client, spec.task_id) == []
    survivors = [p.pid for p in psutil.process_iter(["cmdline"]) if marker in (p.info["cmdline"] or [])]
    assert survivors == []


def test_pids_limit_bounds_a_python_fork_storm(worker, celery_app, store) -> None:
    storm = """
import json, os, time
made, refused = 0, None
for _ in range(500):
    try:
        pid = os.fork()
    except OSError as exc:
        refused = exc.strerror; break
    if pid == 0:
        time.sleep(30); os._exit(0)
    made += 1
json.dump({"made": made, "refused": refused}, open("probe.json", "w"))
"""
    _, result = run(celery_app, store, {"main.py": storm}, pids=32, timeout=20)
    outcome = outcome_of(result)
    probe = report(store, outcome)
    assert probe["refused"] == "Resource temporarily unavailable", probe
    assert probe["made"] < 32, probe
    assert outcome.usage is not None and outcome.usage.pids_peak <= 32, outcome.usage
