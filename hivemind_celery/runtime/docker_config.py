"""How a task container is configured: names, labels, hardening, limits.

Pure functions (no Docker calls), so the hardening can be read in one place
and checked without a daemon. Every container and volume carries the labels
`hivemind.worker`, `hivemind.task_id` and `hivemind.role`, which is how
`kill` and `reap` find them, from any process.
"""

from __future__ import annotations

import re

from docker.types import DeviceRequest, LogConfig, Mount, Ulimit

from hivemind_celery.runtime.base import Job
from hivemind_celery.settings import Settings

LABEL_WORKER = "hivemind.worker"
LABEL_TASK = "hivemind.task_id"
LABEL_ROLE = "hivemind.role"

WORKSPACE = "/workspace"
# The set-up step installs requirements into a second volume mounted outside
# the workspace, so installed packages never travel back in the result zip.
DEPS_MOUNT = "/opt/hivemind"
DEPS_DIR = f"{DEPS_MOUNT}/deps"
SETUP_TMP = f"{DEPS_MOUNT}/tmp"  # pip unpacks wheels here: /tmp is small and noexec
CA_FILE = f"{DEPS_MOUNT}/ca-certificates.crt"

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def object_name(worker_id: str, task_id: str, role: str) -> str:
    """Docker name of a task's container or volume (Docker allows [A-Za-z0-9_.-])."""
    worker = _UNSAFE.sub("-", worker_id).strip("-.") or "worker"
    return f"hm-{worker[:60]}-{_UNSAFE.sub('-', task_id)}-{role}"


def labels(worker_id: str, task_id: str, role: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Ours win over the job's own labels: they decide what kill/reap remove."""
    return {**(extra or {}), LABEL_WORKER: worker_id, LABEL_TASK: task_id, LABEL_ROLE: role}


def label_filters(worker_id: str, task_id: str | None = None) -> dict[str, list[str]]:
    wanted = [f"{LABEL_WORKER}={worker_id}"]
    if task_id is not None:
        wanted.append(f"{LABEL_TASK}={task_id}")
    return {"label": wanted}


def step_env(job: Job, role: str, has_deps: bool, has_ca: bool) -> dict[str, str]:
    """Environment of a step. The set-up step gets none of the task's own
    variables (a PIP_INDEX_URL there would undo the requirements checks)."""
    base = {"HOME": WORKSPACE, "HIVEMIND_TASK_ID": job.spec.task_id}
    if role == "setup":
        env = {**base, "PIP_TARGET": DEPS_DIR, "TMPDIR": SETUP_TMP, "PYTHONUNBUFFERED": "1"}
        if has_ca:
            env.update(SSL_CERT_FILE=CA_FILE, PIP_CERT=CA_FILE)
        return env
    env = {**base, "PYTHONUNBUFFERED": "1", **job.spec.env}
    if has_deps:
        env["PYTHONPATH"] = ":".join(p for p in (DEPS_DIR, job.spec.env.get("PYTHONPATH", "")) if p)
    return env


def container_kwargs(
    job: Job,
    settings: Settings,
    role: str,
    workspace_volume: str,
    deps_volume: str | None,
    host_cpus: float,
    has_ca: bool = False,
) -> dict:
    """Keyword arguments for `client.containers.create` of one step."""
    spec = job.spec
    setup = role == "setup"
    mounts = [Mount(target=WORKSPACE, source=workspace_volume, type="volume")]
    if deps_volume:
        # The main step may read the installed packages but not change them.
        mounts.append(Mount(target=DEPS_MOUNT, source=deps_volume, type="volume", read_only=not setup))
    network = job.setup_network if setup else job.network
    memory = f"{spec.memory_mb}m"
    kwargs: dict = {
        "image": job.image,
        "command": list(job.setup_command or []) if setup else list(job.command),
        "name": object_name(settings.worker_id, spec.task_id, role),
        "labels": labels(settings.worker_id, spec.task_id, role, job.labels),
        "environment": step_env(job, role, deps_volume is not None, has_ca),
        "working_dir": WORKSPACE,
        "user": settings.task_user,
        "hostname": "task",
        "detach": True,
        "stdin_open": False,
        "tty": False,
        "init": True,  # a real PID 1: forwards SIGTERM, reaps zombies
        "mounts": mounts,
        "read_only": True,
        "tmpfs": {"/tmp": f"size={settings.tmpfs_size},noexec,nosuid,nodev"},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "network_mode": "bridge" if network else "none",
        "mem_limit": memory,
        "memswap_limit": memory,  # no swap
        "nano_cpus": int(min(spec.cpus, host_cpus) * 1e9),
        "pids_limit": job.pids,
        "ulimits": [
            Ulimit(name="nofile", soft=settings.nofile_limit, hard=settings.nofile_limit),
            # RLIMIT_NPROC counts every process of the uid on the host, all task
            # containers included; the per-task bound is pids_limit.
            Ulimit(name="nproc", soft=settings.nproc_limit, hard=settings.nproc_limit),
        ],
        "log_config": LogConfig(type="json-file", config={"max-size": settings.log_max_size, "max-file": "1"}),
    }
    if spec.wants_gpu:
        kwargs["device_requests"] = [DeviceRequest(count=spec.gpus or 1, capabilities=[["gpu"]])]
    return kwargs


def volume_kwargs(settings: Settings, task_id: str, role: str) -> dict:
    return {
        "name": object_name(settings.worker_id, task_id, role),
        "driver": "local",
        "labels": labels(settings.worker_id, task_id, role),
    }
