"""How one step's container ended, in words the outcome uses: its exit code and
OOM flag (or that it vanished), the status and reason, a GPU task's note, the
set-up step's pip failure explained; and the start told to the meter.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from docker.errors import APIError, NotFound

from hivemind_celery.core.model import TaskStatus, UsageSummary
from hivemind_celery.core.settings import Settings
from hivemind_celery.runtime.archive import WorkspaceCopy
from hivemind_celery.runtime.base import Job, OnStart, Started, exit_reason
from hivemind_celery.runtime.freeze import frozen_reason
from hivemind_celery.runtime.index_lookup import project_files
from hivemind_celery.runtime.logtail import LogTail
from hivemind_celery.runtime.setup_egress import ProxyReport
from hivemind_celery.runtime.setup_step import explain_failure
from hivemind_celery.usage import task_cgroup

log = logging.getLogger(__name__)


@dataclass
class StepEnd:
    exit_code: int | None = None
    oom_killed: bool = False
    timed_out: bool = False
    frozen_too_long: bool = False  # a pause froze it past HIVEMIND_MAX_FROZEN_SECONDS
    stopped: bool = False
    vanished: bool = False  # the container was removed under us
    over_disk: str = ""  # why the task was killed for its disk use
    wall_seconds: float = 0.0  # from the start to the container's exit
    usage: UsageSummary | None = None  # its totals from its cgroup parent, when it has one

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not (
            self.timed_out or self.stopped or self.vanished or self.oom_killed or self.over_disk or self.frozen_too_long
        )


def status(job: Job, role: str, end: StepEnd, settings: Settings) -> tuple[TaskStatus, str]:
    step = "set-up step (pip install -r requirements.txt)" if role == "setup" else "task"
    if end.vanished:
        return TaskStatus.CANCELLED, "stopped: the task's container was removed while it ran"
    if end.stopped:
        return TaskStatus.CANCELLED, "stopped by request"
    if end.frozen_too_long:
        return TaskStatus.CANCELLED, frozen_reason(settings.max_frozen_seconds)
    if end.over_disk:
        return TaskStatus.FAILED, f"{step} was killed: {end.over_disk}"
    if end.timed_out:
        limit = settings.setup_timeout if role == "setup" else job.timeout
        return TaskStatus.TIMED_OUT, f"{step} timed out after {limit:g} s"
    if end.oom_killed:
        return TaskStatus.OOM_KILLED, f"{step} ran out of memory (limit {job.spec.memory_mb} MiB)"
    if end.exit_code == 0:
        return TaskStatus.SUCCEEDED, ""
    if end.exit_code == 137:
        return TaskStatus.FAILED, f"{step} was killed (SIGKILL, exit code 137)"
    return TaskStatus.FAILED, exit_reason(step, end.exit_code)


def gpu_note(job: Job, containers: list[Any]) -> str:
    """For a GPU task, the GPUs Docker recorded on its container (read back
    before removal): a host without NVIDIA's container runtime creates such a
    container but cannot start it, and the reason should say which GPUs."""
    if not job.gpu_devices:
        return ""
    recorded: list[str] = []
    for container in containers:
        try:
            container.reload()
        except (NotFound, APIError):
            continue
        for request in (container.attrs.get("HostConfig") or {}).get("DeviceRequests") or []:
            recorded += request.get("DeviceIDs") or []
    return (
        f" (a GPU task: the host's Docker could not give it GPUs {', '.join(job.gpu_devices)}; "
        f"its container was created with DeviceIDs {recorded}; is NVIDIA's container toolkit installed?)"
    )


def read_exit(container: Any, end: StepEnd, state: dict | None = None) -> None:
    """The exit code and OOM flag of an ended container into `end`, or that it
    vanished; from `state` (its inspect's State, read once it ended) when given."""
    if state is None:
        try:
            state = container.client.api.inspect_container(container.id).get("State") or {}
        except NotFound:
            end.vanished = True
            return
    # A forced removal (kill from any process) marks the container
    # "removing" before it kills it, so this tells a kill from a crash.
    if state.get("Status") in ("removing", "dead"):
        end.vanished = True
        return
    end.exit_code = state.get("ExitCode")
    end.oom_killed = bool(state.get("OOMKilled"))


def announce(
    container: Any,
    on_start: OnStart,
    task_id: str,
    reader: Callable[[], WorkspaceCopy | None] | None = None,
    needs_pid: bool = False,
) -> None:
    """Tell `on_start` the running step's cgroup of its own, or its container's PID
    (the sampler starts from it). Asking dockerd for the PID is left out when the
    step's cgroup will do: just after a start, dockerd can take tens of
    milliseconds to answer, and a short task would end waiting for it."""
    try:
        parent = (container.attrs.get("HostConfig") or {}).get("CgroupParent")  # as created
        cgroup = task_cgroup.locate(parent) if parent else None
        pid = 0
        if cgroup is None or needs_pid:
            container.reload()
            pid = int(container.attrs.get("State", {}).get("Pid") or 0)
        on_start(
            Started(
                task_id=task_id,
                container_id=container.id,
                pid=pid,
                cgroup=cgroup.paths if cgroup is not None else None,
                read_checkpoint=reader,
            )
        )
    except Exception:  # a failing sampler must not stop the task
        log.exception("on_start callback failed", extra={"task_id": task_id})


def setup_reason(reason: str, tail: LogTail, settings: Settings, report: ProxyReport) -> str:
    """pip's failure in one sentence naming the package or refused host."""
    explained = explain_failure(tail.text(), settings, report.denied, partial(project_files, settings)) or reason
    return f"{explained} ({report.problem})" if report.problem else explained
