"""How a task container is configured: names, labels, hardening, limits.

Pure functions (no Docker calls), so the hardening can be read in one place
and checked without a daemon. Every container and volume carries the labels
`hivemind.worker`, `hivemind.task_id` and `hivemind.role`, which is how
`kill` and `reap` find them, from any process.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from docker.types import DeviceRequest, LogConfig, Mount, Ulimit

from hivemind_celery.core.settings import Settings
from hivemind_celery.payloads.checkpoint import CHECKPOINT_DIR
from hivemind_celery.runtime import setup_proxy, setup_step
from hivemind_celery.runtime.base import Job

LABEL_WORKER = "hivemind.worker"
LABEL_TASK = "hivemind.task_id"
LABEL_ROLE = "hivemind.role"

WORKSPACE = "/workspace"
# The set-up step installs requirements into a second volume mounted outside
# the workspace, so installed packages never travel back in the result zip.
DEPS_MOUNT = "/opt/hivemind"
DEPS_DIR = f"{DEPS_MOUNT}/deps"
SETUP_TMP = f"{DEPS_MOUNT}/tmp"  # pip unpacks wheels here: /tmp is small and noexec
SETUP_HOME = f"{DEPS_MOUNT}/home"  # the set-up step's HOME: empty, never the task's files
PROXY_DIR = f"{DEPS_MOUNT}/proxy"
PROXY_SOCKET = f"{PROXY_DIR}/sock"  # the set-up proxy's Unix socket (runtime/setup_proxy.py)
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


def setup_proxied(job: Job, settings: Settings) -> bool:
    """Does the set-up step reach the network only through the set-up proxy?"""
    return setup_step.is_pip(job.setup_command) and job.setup_network and settings.setup_egress == "index"


def _relay_url() -> str:
    return f"http://127.0.0.1:{setup_step.RELAY_PORT}"


def setup_argv(job: Job, settings: Settings, has_ca: bool) -> list[str]:
    """pip with the operator's options; behind the relay when proxied."""
    if not setup_step.is_pip(job.setup_command):
        return list(job.setup_command or [])
    proxy = _relay_url() if setup_proxied(job, settings) else None
    pip = [*(job.setup_command or []), *setup_step.pip_options(settings, DEPS_DIR, CA_FILE if has_ca else None, proxy)]
    if proxy is None:
        return pip
    relay = Path(setup_proxy.__file__).read_text()
    return ["python3", "-I", "-c", relay, "relay", PROXY_SOCKET, str(setup_step.RELAY_PORT), "--", *pip]


def step_env(job: Job, role: str, has_deps: bool, has_ca: bool, settings: Settings) -> dict[str, str]:
    """Environment of a step. The set-up step gets none of the task's own
    variables (a PIP_INDEX_URL there would undo the requirements checks)."""
    base = {"HOME": WORKSPACE, "HIVEMIND_TASK_ID": job.spec.task_id}
    if role == "setup":
        proxied = setup_proxied(job, settings)
        return {
            **setup_step.setup_env(SETUP_HOME, SETUP_TMP, CA_FILE if has_ca else None, _relay_url() if proxied else None),
            "HIVEMIND_TASK_ID": job.spec.task_id,
        }
    env = {
        **base,
        "PYTHONUNBUFFERED": "1",
        **job.spec.env,
        "HIVEMIND_CHECKPOINT_DIR": f"{WORKSPACE}/{CHECKPOINT_DIR}",
        "HIVEMIND_CHECKPOINT_INTERVAL": f"{settings.checkpoint_interval:g}",
    }
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
    cgroup_parent: str | None = None,
) -> dict:
    """Keyword arguments for `client.containers.create` of one step.
    `cgroup_parent`: a cgroup of the step's own that keeps its totals after exit."""
    spec = job.spec
    setup = role == "setup"
    # dockerd makes a volume the first time a container mounts it, with these labels.
    mounts = [
        Mount(
            target=WORKSPACE, source=workspace_volume, type="volume", labels=labels(settings.worker_id, spec.task_id, "workspace")
        )
    ]
    if deps_volume:
        # The main step may read the installed packages but not change them.
        deps_labels = labels(settings.worker_id, spec.task_id, "deps")
        mounts.append(Mount(target=DEPS_MOUNT, source=deps_volume, type="volume", read_only=not setup, labels=deps_labels))
    # A proxied set-up step has no network of its own: the proxy is its way out.
    if setup:
        network = setup_step.is_pip(job.setup_command) and job.setup_network and not setup_proxied(job, settings)
    else:
        network = job.network
    memory = f"{spec.memory_mb}m"
    kwargs: dict = {
        "image": job.image,
        "command": setup_argv(job, settings, has_ca) if setup else list(job.command),
        "name": object_name(settings.worker_id, spec.task_id, role),
        "labels": labels(settings.worker_id, spec.task_id, role, job.labels),
        "environment": step_env(job, role, deps_volume is not None, has_ca, settings),
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
    if cgroup_parent:
        kwargs["cgroup_parent"] = cgroup_parent
    if job.gpu_devices and not setup:
        # The GPUs this task holds on the host, by UUID (NVML's order can differ from CUDA's).
        kwargs["device_requests"] = [DeviceRequest(device_ids=list(job.gpu_devices), capabilities=[["gpu"]])]
    elif spec.wants_gpu and not setup:
        kwargs["device_requests"] = [DeviceRequest(count=spec.gpus or 1, capabilities=[["gpu"]])]
    return kwargs


def proxy_kwargs(job: Job, settings: Settings, deps_volume: str) -> dict:
    """The set-up proxy of one task: on Docker's default bridge, hardened like
    a task, sharing only the deps volume (where its socket lives) with the
    set-up container. Runs the task's image: it needs nothing but python3."""
    config = {"socket": PROXY_SOCKET, "allow": setup_step.allowed_endpoints(settings)}
    task_id = job.spec.task_id
    return {
        "image": job.image,
        "command": ["python3", "-I", "-c", Path(setup_proxy.__file__).read_text(), "proxy", json.dumps(config)],
        "name": object_name(settings.worker_id, task_id, "proxy"),
        "labels": labels(settings.worker_id, task_id, "proxy", job.labels),
        "environment": {"PYTHONUNBUFFERED": "1", "HOME": PROXY_DIR},
        "working_dir": PROXY_DIR,
        "user": settings.task_user,
        "hostname": "setup-proxy",
        "detach": True,
        "init": True,
        "mounts": [Mount(target=DEPS_MOUNT, source=deps_volume, type="volume")],
        "read_only": True,
        "tmpfs": {"/tmp": "size=16m,noexec,nosuid,nodev"},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "network_mode": "bridge",
        "mem_limit": "128m",
        "memswap_limit": "128m",
        "nano_cpus": int(0.5e9),
        "pids_limit": 32,
        "ulimits": [Ulimit(name="nofile", soft=1024, hard=1024)],
        "log_config": LogConfig(type="json-file", config={"max-size": "1m", "max-file": "1"}),
    }


def volume_kwargs(settings: Settings, task_id: str, role: str) -> dict:
    return {
        "name": object_name(settings.worker_id, task_id, role),
        "driver": "local",
        "labels": labels(settings.worker_id, task_id, role),
    }
