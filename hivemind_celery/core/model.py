"""The task model: what a task asks for and how it ended.

Plain typed data with no I/O, shared by the worker, the bridge and the Node
Pool. Validation errors name the bad field (pydantic puts its name first).
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Task ids become Celery ids, Redis keys, container labels and names, and file
# names in result zips: keep them to a safe alphabet (no separators, no shell
# metacharacters).
TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_PAYLOAD_REF = re.compile(r"^sha256:[0-9a-f]{64}$")
# The Celery task that runs a TaskSpec (the bridge and the CLI send it by name).
TASK_NAME = "hivemind.run_task"


class TaskStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    OOM_KILLED = "oom_killed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class NetworkPolicy(StrEnum):
    NONE = "none"  # no interface but loopback
    BRIDGE = "bridge"  # outbound access, only where the operator allows it


class Queue(StrEnum):
    CPU = "cpu"
    GPU = "gpu"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TaskSpec(_Frozen):
    """What to run and with how much. Built by the bridge or `hivemind run`."""

    task_id: str = Field(pattern=TASK_ID_PATTERN)
    payload: str = Field(description="Payload store reference of the task zip: sha256:<hex>.")
    image: str | None = Field(None, min_length=1, max_length=256, description="None: the site's default.")
    command: list[str] | None = Field(None, description="argv to run in the workspace; None: resolve the zip's entry point.")
    cpus: float = Field(1.0, gt=0, le=1024)
    memory_mb: int = Field(512, gt=0, le=4 * 1024 * 1024)
    pids: int | None = Field(None, gt=0, le=1_000_000, description="None: the site's default.")
    gpus: int = Field(0, ge=0, le=64)
    gpu_memory_mb: int = Field(0, ge=0, le=4 * 1024 * 1024)
    timeout: float | None = Field(None, gt=0, description="Seconds; None: the site's default.")
    network: NetworkPolicy = NetworkPolicy.NONE
    env: dict[str, str] = Field(default_factory=dict)
    owner: str | None = Field(None, max_length=128, description="Who submitted it (for logs).")

    @field_validator("payload")
    @classmethod
    def _payload_ref(cls, value: str) -> str:
        if not _PAYLOAD_REF.match(value):
            raise ValueError("must look like sha256:<64 hex digits>")
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or any("\x00" in arg for arg in value)):
            raise ValueError("must be a non-empty argv without NUL bytes")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for name, val in value.items():
            if not _ENV_NAME.match(name):
                raise ValueError(f"variable name {name!r} is not a valid identifier")
            if "\x00" in val:
                raise ValueError(f"variable {name} contains a NUL byte")
        return value

    @property
    def queue(self) -> Queue:
        return Queue.GPU if self.wants_gpu else Queue.CPU

    @property
    def wants_gpu(self) -> bool:
        return self.gpus > 0 or self.gpu_memory_mb > 0


# Where totals came from: a cgroup of the step's own (exact), the rusage of
# the reaped processes (exact for every process that was waited for), or the
# last live reading of Docker's stats API or psutil (a lower bound).
UsageSource = Literal["cgroup", "rusage", "docker-stats", "process", "none"]


class UsageSummary(_Frozen):
    """Measured totals over one interval, `wall_seconds` long: a whole task
    (TaskOutcome.usage, the reward's inputs) or one of its steps."""

    cpu_seconds: float = 0.0
    cpu_user_seconds: float = 0.0
    cpu_system_seconds: float = 0.0
    cpu_percent: float = Field(0.0, description="cpu_seconds / (wall_seconds x reserved cores) x 100, capped at 100.")
    memory_peak_bytes: int = 0
    memory_percent: float = Field(0.0, description="Peak over the memory limit (0-100).")
    pids_peak: int = 0
    oom_kills: int = 0
    gpu_percent: float = 0.0
    gpu_memory_peak_bytes: int = 0
    samples: int = 0
    source: UsageSource = "none"
    wall_seconds: float = Field(0.0, description="Length of the interval the totals and percentages cover.")


class GpuUsed(_Frozen):
    """One GPU a task held for its whole run (NVML's index and UUID)."""

    index: int
    uuid: str
    name: str
    memory_total_mb: int = 0


AttemptEnd = Literal["running", "finished", "requeued", "released", "lost"]


class Attempt(_Frozen):
    """One start of a task on a worker. A task interrupted (its worker stopped,
    its host died, a long pause released it) runs again, from its last saved
    checkpoint when it has one (docs/checkpoints.md)."""

    number: int = Field(description="1 for the first start.")
    worker: str = ""
    host: str = ""
    started_at: datetime
    ended_at: datetime | None = None
    ended: AttemptEnd = Field(
        "running",
        description="finished; requeued (its worker stopped); released (a long "
        "pause); lost (its worker died: measured up to its last sample).",
    )
    wall_seconds: float = 0.0
    cpu_seconds: float = Field(0.0, description="Measured CPU-seconds of this attempt.")
    reward: int | None = Field(None, description="CPT earned by this attempt on its measured use.")
    resumed_from: str | None = Field(None, description="Reference of the checkpoint it started from.")
    resumed_progress: float | None = Field(None, description="Progress (0-1) the checkpoint it started from had.")
    checkpoints_saved: int = 0
    saved_progress: float | None = Field(None, description="Progress of the last checkpoint this attempt saved.")
    notes: list[str] = Field(default_factory=list, description="Checkpoints refused, and why.")


class TaskOutcome(_Frozen):
    """How a task ended. Returned by `hivemind.run_task` (as JSON) and written
    into the result zip as execution_report.json."""

    task_id: str
    status: TaskStatus
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    reason: str = ""
    log_tail: str = ""
    result_ref: str | None = Field(None, description="Payload store reference of the result zip.")
    worker: str = ""
    usage: UsageSummary | None = Field(
        None, description="The whole run, set-up step included, over `duration`: the reward's inputs."
    )
    setup_usage: UsageSummary | None = Field(None, description="The set-up step alone (requirements.txt).")
    main_usage: UsageSummary | None = Field(None, description="The main step alone.")
    reward: int | None = Field(None, description="CPT credit earned, when computed.")
    gpus: list[GpuUsed] = Field(default_factory=list, description="The GPUs the task held (its GPU % and memory are in `usage`).")
    attempts: list[Attempt] = Field(
        default_factory=list, description="Every start of the task, this one last; `reward` is their sum."
    )

    @property
    def duration(self) -> float:
        if self.started_at is None or self.finished_at is None:
            return 0.0
        return max(0.0, (self.finished_at - self.started_at).total_seconds())

    @property
    def succeeded(self) -> bool:
        return self.status is TaskStatus.SUCCEEDED
