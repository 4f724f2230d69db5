"""What a runtime is given and what it gives back.

A runtime runs one job to its end: set-up step (requirements), main step,
output streaming, timeout, stop requests, and copying the workspace back.
It knows nothing of Celery or Redis; callers hand it callbacks.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from hivemind_celery.core.errors import HivemindError
from hivemind_celery.core.model import TaskSpec, TaskStatus, UsageSummary
from hivemind_celery.runtime.archive import WorkspaceCopy
from hivemind_celery.usage.cgroup import CgroupPaths

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Started:
    """Told to `on_start` once the main step runs, so a sampler can attach."""

    task_id: str
    container_id: str | None  # None for the process runtime
    pid: int  # host PID of the task's first process; 0 if it already ended, or if `cgroup` is given and will do
    cgroup: CgroupPaths | None = None  # the step's own cgroup, readable after its processes end
    # Copies the task's checkpoint directory as it stands (bounded, no links followed); None if unreadable.
    read_checkpoint: Callable[[], WorkspaceCopy | None] | None = None


@dataclass(frozen=True)
class Job:
    spec: TaskSpec
    image: str  # resolved and allowed
    command: list[str]  # argv of the main step, run in /workspace
    workspace_tar: bytes  # the task's files as a tar (made by workspace.py)
    timeout: float  # seconds for the main step
    setup_command: list[str] | None = None  # e.g. pip install -r requirements.txt
    network: bool = False  # may the main step reach the network?
    setup_network: bool = True  # may the set-up step reach the network?
    pids: int = 256
    labels: dict[str, str] = field(default_factory=dict)
    gpu_devices: tuple[str, ...] = ()  # UUIDs of the GPUs the task holds (task/gpus.py)
    # No earlier start of this task is recorded (task/attempts.py), so nothing of an
    # earlier attempt can be left to remove first. False (look) unless the caller knows.
    first_attempt: bool = False


@dataclass
class JobResult:
    status: TaskStatus
    exit_code: int | None
    started_at: datetime
    finished_at: datetime
    log_tail: str
    reason: str = ""
    workspace_tar: bytes | None = None  # the workspace after the run: a tar, names relative to it
    stopped: bool = False  # ended by a stop request
    workspace_notes: list[str] = field(default_factory=list)  # files left out of workspace_tar, and why
    # Each step's totals read from the kernel once it ended ("setup", "main");
    # a step missing here was not measured by the runtime (the sampler's are used).
    step_usage: dict[str, UsageSummary] = field(default_factory=dict)
    # The checkpoint directory once the main step ended (the last checkpoint), when it could be read.
    checkpoint: WorkspaceCopy | None = None


class RuntimeRefused(HivemindError):
    """The runtime cannot start this job as asked (e.g. its image is missing
    and cannot be pulled); the message is the reason given to the submitter."""


# Callbacks a caller may pass to Runtime.run.
OnOutput = Callable[[bytes], None]
OnStart = Callable[[Started], None]
ShouldStop = Callable[[], bool]
StopGrace = Callable[[], float]  # seconds between SIGTERM and SIGKILL for a stop now


class Runtime(Protocol):
    name: str

    def run(
        self,
        job: Job,
        on_output: OnOutput | None = None,
        on_start: OnStart | None = None,
        should_stop: ShouldStop | None = None,
        defer_cleanup: bool = False,
        should_freeze: ShouldStop | None = None,
        stop_grace: StopGrace | None = None,
    ) -> JobResult:
        """Run the job to its end. With defer_cleanup, what the run leaves
        (containers, volumes) stays until `cleanup(task_id)` or the next run.
        While should_freeze() is true the running step is frozen (runtime/freeze.py).
        A stop gives the task stop_grace() seconds (default HIVEMIND_STOP_GRACE).
        on_start may be called from a thread of the runtime's; it has returned
        before run() does."""
        ...

    def cleanup(self, task_id: str) -> None:
        """Remove what a run with defer_cleanup left for task_id."""
        ...

    def kill(self, task_id: str) -> int:
        """Stop and remove whatever runs for task_id now; returns how many went."""
        ...

    def reap(self, keep: set[str]) -> int:
        """Remove this worker's leftovers whose task id is not in keep."""
        ...


def exit_reason(step: str, exit_code: int | None) -> str:
    """ "task failed with exit code 137 (killed by SIGKILL)": a code above 128 is
    a signal, which usually came from outside the task (dockerd stopping, the
    kernel's OOM killer, an operator)."""
    reason = f"{step} failed with exit code {exit_code}"
    if exit_code is not None and 128 < exit_code < 128 + signal.NSIG:
        try:
            reason += f" (killed by {signal.Signals(exit_code - 128).name})"
        except ValueError:
            pass
    return reason


def safe_stop_check(should_stop: ShouldStop | None, task_id: str) -> ShouldStop:
    """`should_stop` that never raises: a failing check (e.g. Redis briefly
    gone) keeps the task running and says so."""

    def check() -> bool:
        if should_stop is None:
            return False
        try:
            return bool(should_stop())
        except Exception:  # noqa: BLE001
            log.warning("stop check failed; continuing", exc_info=True, extra={"task_id": task_id})
            return False

    return check
