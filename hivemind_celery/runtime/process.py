"""The process runtime: tasks as plain subprocesses, WITHOUT isolation.

For machines without Docker only (like Nomad's raw_exec), chosen with
HIVEMIND_RUNTIME=process; it says so loudly when it starts. A task runs as the
worker's own user and can read whatever that user can. What it does give:

- a private workspace directory per task under the runtime dir, filled from
  the job's tar with tarfile's "data" filter (no links out, no devices, no
  absolute or `..` paths, no setuid bits);
- each step in its own session/process group, so stop, timeout and kill reach
  every process it started (unless one calls setsid itself);
- rlimits set by a tiny launcher before exec (never preexec_fn, which is unsafe
  with threads): address space from memory_mb, processes from pids (RLIMIT_NPROC
  counts all of the user's processes, so the limit is what the user runs now
  plus pids; root ignores it), CPU seconds (generous: 2 x timeout x cpus + 60),
  file size, no core dumps;
- a clean environment: PATH and ours, never the worker's (it holds secrets);
- a pid file per task, so `kill` and `reap` work from any process.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import psutil

from hivemind_celery.core.model import TaskStatus, UsageSummary
from hivemind_celery.core.settings import Settings
from hivemind_celery.core.units import MiB
from hivemind_celery.payloads.checkpoint import CHECKPOINT_DIR
from hivemind_celery.payloads.workspace import RESERVED_DIR
from hivemind_celery.runtime import setup_step, step_usage
from hivemind_celery.runtime.archive import WorkspaceCopy, copy_dir
from hivemind_celery.runtime.base import (
    Job,
    JobResult,
    OnOutput,
    OnStart,
    ShouldStop,
    Started,
    StopGrace,
    exit_reason,
    safe_stop_check,
)
from hivemind_celery.runtime.freeze import Freezer, frozen_reason
from hivemind_celery.runtime.index_lookup import project_files
from hivemind_celery.runtime.logtail import LogTail
from hivemind_celery.usage import task_cgroup

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
PID_FILE = "pid.json"
KILLED_MARK = "killed"
# Runs in the child: set the limits, then become the task.
# Joining the step's cgroup comes first, so that nothing it ever starts is
# outside it; the CPU time spent before joining (this launcher's start-up,
# charged elsewhere) goes to the runner on a pipe closed before the exec, out
# of the task's reach.
_LAUNCHER = (
    "import json, os, resource, sys\n"
    "note = int(sys.argv[3])\n"
    "for path in json.loads(sys.argv[2]):\n"
    "    with open(path, 'w') as procs:\n"
    "        procs.write(str(os.getpid()))\n"
    "spent = resource.getrusage(resource.RUSAGE_SELF)\n"
    "os.write(note, repr(spent.ru_utime + spent.ru_stime).encode())\n"
    "os.close(note)\n"
    "for name, value in json.loads(sys.argv[1]).items():\n"
    "    resource.setrlimit(getattr(resource, name), (value, value))\n"
    "os.execvp(sys.argv[4], sys.argv[4:])\n"
)


def _now() -> datetime:
    return datetime.now(UTC)


class ProcessRuntime:
    name = "process"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        default = Path(tempfile.gettempdir()) / f"hivemind-{settings.worker_id}"
        self.root = Path(settings.runtime_dir) if settings.runtime_dir else default
        self._should_freeze: ShouldStop | None = None  # the running job's (run() sets it)
        self._stop_grace: StopGrace | None = None  # likewise
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        log.warning(
            "PROCESS RUNTIME: tasks run WITHOUT isolation, as this worker's user, with only "
            "rlimits and a private directory; use it only for code you trust (runtime dir %s)",
            self.root,
        )

    # --- Runtime protocol ---------------------------------------------------
    def kill(self, task_id: str) -> int:
        return self._kill_dir(self.root / task_id)

    def reap(self, keep: set[str]) -> int:
        removed = 0
        for task_dir in sorted(self.root.iterdir()):
            if task_dir.is_dir() and task_dir.name not in keep:
                removed += self._kill_dir(task_dir)
                log.info("reaped process-runtime leftovers", extra={"task_id": task_dir.name})
        return removed

    def cleanup(self, task_id: str) -> None:
        pass

    def run(
        self,
        job: Job,
        on_output: OnOutput | None = None,
        on_start: OnStart | None = None,
        should_stop: ShouldStop | None = None,
        defer_cleanup: bool = False,  # nothing worth deferring: the task's directory goes at once
        should_freeze: ShouldStop | None = None,
        stop_grace: StopGrace | None = None,
    ) -> JobResult:
        task_id = job.spec.task_id
        self._should_freeze = should_freeze
        self._stop_grace = stop_grace
        task_dir = self.root / task_id
        self._kill_dir(task_dir)  # leftovers of an earlier attempt
        for sub in ("workspace", "deps", "tmp", "home"):
            (task_dir / sub).mkdir(mode=0o700, parents=True)
        tail = LogTail(self.settings.log_tail_bytes, on_output, task_id)
        started_at = _now()
        try:
            _unpack(job.workspace_tar, task_dir / "workspace")
            role, end = "main", None
            step_usage = {}
            if job.setup_command:
                role = "setup"
                tail.note("set-up: installing requirements.txt")
                end = self._step(job, "setup", task_dir, tail, should_stop, None)
                step_usage["setup"] = end.usage
                if end.ok:
                    tail.note("set-up done")
            if end is None or end.ok:
                role = "main"
                end = self._step(job, "main", task_dir, tail, should_stop, on_start)
                step_usage["main"] = end.usage
            copy = copy_dir(task_dir / "workspace", self.settings.result_max_bytes, leave_out=RESERVED_DIR)
            checkpoint = _read_checkpoint(task_dir, self.settings) if role == "main" else None
            status, reason = _status(job, role, end, self.settings)
            if role == "setup" and status is TaskStatus.FAILED and end.exit_code:
                reason = (
                    setup_step.explain_failure(tail.text(), self.settings, lookup=partial(project_files, self.settings)) or reason
                )
            return JobResult(
                status,
                end.exit_code,
                started_at,
                _now(),
                tail.text(),
                reason,
                copy.tar,
                end.stopped or end.frozen_too_long,
                copy.skipped,
                step_usage={name: usage for name, usage in step_usage.items() if usage},
                checkpoint=checkpoint,
            )
        finally:
            shutil.rmtree(task_dir, ignore_errors=True)

    # --- one step -----------------------------------------------------------
    def _step(
        self, job: Job, role: str, task_dir: Path, tail: LogTail, should_stop: ShouldStop | None, on_start: OnStart | None
    ) -> _StepEnd:
        argv = _setup_argv(job, task_dir, self.settings) if role == "setup" else list(job.command)
        timeout = self.settings.setup_timeout if role == "setup" else job.timeout
        limits = _limits(job, timeout, self.settings)
        cgroup = task_cgroup.create(task_cgroup.leaf_name(self.settings.worker_id, job.spec.task_id, role))
        began = time.monotonic()
        note_in, note_out = os.pipe()
        try:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-c",
                    _LAUNCHER,
                    json.dumps(limits),
                    json.dumps(cgroup.procs_files if cgroup else []),
                    str(note_out),
                    *argv,
                ],
                pass_fds=(note_out,),
                cwd=task_dir / "workspace",
                env=_env(job, role, task_dir, self.settings),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except BaseException:
            os.close(note_in)
            if cgroup is not None:
                cgroup.remove()
            raise
        finally:
            os.close(note_out)
        _write_pid_file(task_dir, proc.pid)
        if on_start is not None:
            try:
                on_start(
                    Started(
                        task_id=job.spec.task_id,
                        container_id=None,
                        pid=proc.pid,
                        cgroup=cgroup.paths if cgroup else None,
                        read_checkpoint=partial(_read_checkpoint, task_dir, self.settings),
                    )
                )
            except Exception:  # a failing sampler must not stop the task
                log.exception("on_start callback failed", extra={"task_id": job.spec.task_id})
        reader = threading.Thread(target=_pump, args=(proc, tail), daemon=True)
        reader.start()
        end = _StepEnd()
        deadline = time.monotonic() + timeout
        asked_to_stop = safe_stop_check(should_stop, job.spec.task_id)
        # SIGSTOP/SIGCONT of the step's process group (its cgroup here has no freezer controller)
        freezer = Freezer(
            self._should_freeze,
            partial(_killpg, proc.pid, signal.SIGSTOP),
            partial(_killpg, proc.pid, signal.SIGCONT),
            self.settings.max_frozen_seconds,
            job.spec.task_id,
        )
        rusage = None
        while True:
            rusage = _wait4(proc, POLL_SECONDS)
            if proc.returncode is not None:
                break
            if (task_dir / KILLED_MARK).exists() or asked_to_stop():
                end.stopped = True
                break
            if freezer.poll():
                end.frozen_too_long = True
                break
            if time.monotonic() >= deadline + freezer.frozen_seconds():  # frozen time does not count
                end.timed_out = True
                break
        freezer.release()  # a stopped process group would not see SIGTERM until thawed
        if end.stopped or end.timed_out or end.frozen_too_long:
            rusage = _terminate(proc, self._stop_grace() if self._stop_grace else self.settings.stop_grace)
        _killpg(proc.pid, signal.SIGKILL)  # whatever it left running in its group
        end.usage = _step_usage(job, cgroup, rusage, time.monotonic() - began, _read_note(note_in))
        reader.join(timeout=5)
        end.stopped = end.stopped or (task_dir / KILLED_MARK).exists()
        end.exit_code = proc.returncode
        return end

    def _kill_dir(self, task_dir: Path) -> int:
        """Kill the task's process group and, when no runner is left, its files."""
        if not task_dir.is_dir():
            return 0
        (task_dir / KILLED_MARK).touch()
        killed = 0
        info = _read_pid_file(task_dir)
        if info and _same_process(info["pgid"], info["created"]):
            _killpg(info["pgid"], signal.SIGKILL)
            killed = 1
            log.info("killed process group %s", info["pgid"], extra={"task_id": task_dir.name})
        runner_gone = not info or not _same_process(info["runner"], info["runner_created"])
        for role in ("setup", "main"):  # what left the process group is still in the step's cgroup
            cgroup = task_cgroup.find(task_cgroup.leaf_name(self.settings.worker_id, task_dir.name, role))
            if cgroup is not None:
                cgroup.kill_all()
                if runner_gone:
                    cgroup.remove()
        if runner_gone:
            shutil.rmtree(task_dir, ignore_errors=True)
            killed = max(killed, 1)
        return killed


class _StepEnd:
    def __init__(self) -> None:
        self.exit_code: int | None = None
        self.timed_out = False
        self.stopped = False
        self.frozen_too_long = False  # a pause froze it past HIVEMIND_MAX_FROZEN_SECONDS
        self.usage: UsageSummary | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not (self.timed_out or self.stopped or self.frozen_too_long)


def _limits(job: Job, timeout: float, settings: Settings) -> dict[str, int]:
    limits = {
        "RLIMIT_AS": job.spec.memory_mb * MiB,
        "RLIMIT_CPU": math.ceil(2 * timeout * max(job.spec.cpus, 1.0) + 60),
        "RLIMIT_FSIZE": max(settings.max_unpacked_bytes, settings.result_max_bytes),
        "RLIMIT_CORE": 0,
    }
    if os.getuid() != 0:  # root ignores RLIMIT_NPROC anyway
        uid = os.getuid()
        current = sum(
            p.info["num_threads"] or 0
            for p in psutil.process_iter(["uids", "num_threads"])
            if p.info["uids"] and p.info["uids"].real == uid
        )
        limits["RLIMIT_NPROC"] = current + job.pids
    return limits


def _setup_cert(settings: Settings) -> str | None:
    return settings.ca_bundle if os.access(settings.ca_bundle, os.R_OK) else None


def _setup_argv(job: Job, task_dir: Path, settings: Settings) -> list[str]:
    """pip with the operator's options (no egress restriction here: see setup_step)."""
    if not setup_step.is_pip(job.setup_command):
        return list(job.setup_command or [])
    return [*(job.setup_command or []), *setup_step.pip_options(settings, str(task_dir / "deps"), _setup_cert(settings), None)]


def _env(job: Job, role: str, task_dir: Path, settings: Settings) -> dict[str, str]:
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(task_dir / "workspace"),
        "TMPDIR": str(task_dir / "tmp"),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "HIVEMIND_TASK_ID": job.spec.task_id,
    }
    deps = str(task_dir / "deps")
    if role == "setup":  # none of the task's variables, and HOME outside the workspace: they could redirect pip
        return {**base, **setup_step.setup_env(str(task_dir / "home"), str(task_dir / "tmp"), _setup_cert(settings), None)}
    env = {
        **base,
        **job.spec.env,
        "HIVEMIND_CHECKPOINT_DIR": str(task_dir / "workspace" / CHECKPOINT_DIR),
        "HIVEMIND_CHECKPOINT_INTERVAL": f"{settings.checkpoint_interval:g}",
    }
    env["PYTHONPATH"] = ":".join(p for p in (deps, job.spec.env.get("PYTHONPATH", "")) if p)
    # Only the GPUs the task holds (none for a CPU task); after the task's own variables, which cannot widen it.
    env["CUDA_VISIBLE_DEVICES"] = env["NVIDIA_VISIBLE_DEVICES"] = ",".join(job.gpu_devices)
    return env


def _read_checkpoint(task_dir: Path, settings: Settings) -> WorkspaceCopy | None:
    try:
        return copy_dir(task_dir / "workspace" / CHECKPOINT_DIR, settings.checkpoint_max_bytes)
    except OSError:  # the task removed it, or its run is over
        return None


def _unpack(workspace_tar: bytes, dest: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(workspace_tar)) as tar:
        tar.extractall(dest, filter="data")


def _pump(proc: subprocess.Popen, tail: LogTail) -> None:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    while chunk := os.read(fd, 65536):
        tail.add(chunk)


def _terminate(proc: subprocess.Popen, grace: float) -> resource.struct_rusage | None:
    _killpg(proc.pid, signal.SIGTERM)
    rusage = _wait4(proc, grace)
    if proc.returncode is None:
        _killpg(proc.pid, signal.SIGKILL)
        rusage = _wait4(proc, None)
    return rusage


def _wait4(proc: subprocess.Popen, timeout: float | None) -> resource.struct_rusage | None:
    """Wait for the step's first process like Popen.wait, reaping it with wait4
    so that its rusage (its own and every descendant's it waited for) is kept."""
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.0005
    while proc.returncode is None:
        try:
            pid, status, rusage = os.wait4(proc.pid, 0 if deadline is None else os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere: the status is lost, like Popen's
            proc.returncode = proc.returncode if proc.returncode is not None else 0
            return None
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return rusage
        remaining = deadline - time.monotonic()  # type: ignore[operator]
        if remaining <= 0:
            return None
        delay = min(delay * 2, remaining, 0.05)
        time.sleep(delay)
    return None


def _read_note(note_in: int) -> float:
    """CPU seconds the launcher spent before it joined the cgroup (0 if it never said)."""
    try:
        text = os.read(note_in, 64).decode()
        return max(0.0, float(text)) if text else 0.0
    except (OSError, ValueError):
        return 0.0
    finally:
        os.close(note_in)


def _step_usage(
    job: Job, cgroup: task_cgroup.TaskCgroup | None, rusage: resource.struct_rusage | None, wall: float, before_join: float
) -> UsageSummary | None:
    """The step's totals once it ended: its cgroup's (whatever is still inside is
    killed first, so the counts are final) plus what the launcher spent before
    joining it, else the reaped process's rusage."""
    cpus, memory = job.spec.cpus, job.spec.memory_mb * MiB
    if cgroup is not None:
        try:
            if not cgroup.kill_all():
                log.warning("processes of the step outlived SIGKILL", extra={"task_id": job.spec.task_id})
            counters = task_cgroup.read_or_none(cgroup)
            if counters is not None:
                peak = 0
                if rusage is not None:  # the launcher's own figure can never exceed the kernel's
                    before_join = min(before_join, rusage.ru_utime + rusage.ru_stime)
                    peak = int(rusage.ru_maxrss) * 1024  # a floor where the cgroup keeps no memory counters
                return step_usage.from_counters(counters, wall, cpus, memory, before_join=before_join, memory_peak_floor=peak)
        finally:
            cgroup.remove()
    return step_usage.from_rusage(rusage, wall, cpus, memory) if rusage is not None else None


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _write_pid_file(task_dir: Path, pgid: int) -> None:
    info = {
        "pgid": pgid,
        "created": _create_time(pgid),
        "runner": os.getpid(),
        "runner_created": _create_time(os.getpid()),
    }
    tmp = task_dir / (PID_FILE + ".tmp")
    tmp.write_text(json.dumps(info))
    tmp.replace(task_dir / PID_FILE)


def _read_pid_file(task_dir: Path) -> dict | None:
    try:
        return json.loads((task_dir / PID_FILE).read_text())
    except (OSError, ValueError):
        return None


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _same_process(pid: int, created: float | None) -> bool:
    """Alive and not a recycled pid."""
    return created is not None and _create_time(pid) == created


def _status(job: Job, role: str, end: _StepEnd, settings: Settings) -> tuple[TaskStatus, str]:
    step = "set-up step (pip install -r requirements.txt)" if role == "setup" else "task"
    if end.stopped:
        return TaskStatus.CANCELLED, "stopped by request"
    if end.frozen_too_long:
        return TaskStatus.CANCELLED, frozen_reason(settings.max_frozen_seconds)
    if end.timed_out:
        limit = settings.setup_timeout if role == "setup" else job.timeout
        return TaskStatus.TIMED_OUT, f"{step} timed out after {limit:g} s"
    if end.exit_code == 0:
        return TaskStatus.SUCCEEDED, ""
    if end.exit_code is not None and end.exit_code < 0:
        name = signal.Signals(-end.exit_code).name
        return TaskStatus.FAILED, f"{step} was killed by {name}"
    return TaskStatus.FAILED, exit_reason(step, end.exit_code)
