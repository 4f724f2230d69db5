"""ExecuteTask request -> what the site will run: checks and translation.

Pure except for reading the zip. Every refusal is an IntakeRefused whose
message the Node Pool shows the task owner, so it names the bad field.

Resource mapping (the pool's fields are scores and whole GB):
- cpus = cpu_usage / HIVEMIND_CPU_SCORE_PER_CORE, at least 1 core (0 or any
  small score gets one core), rounded to 1/100 core;
- gpus = ceil(gpu_usage / HIVEMIND_GPU_SCORE_PER_GPU); a task asking for GPU
  memory but no GPU score gets one GPU;
- memory_mb = memory_gb x 1024; 0 means the site default (512 MiB);
- gpu_memory_mb = gpu_memory_gb x 1024.
A task with gpus > 0 goes to the gpu queue, every other to cpu.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from hivemind_celery.core import TASK_ID_PATTERN, HivemindError, Settings, TaskSpec
from hivemind_celery.payloads import WorkspaceError, ZipLimits, entry_command, inspect_zip

DEFAULT_MEMORY_MB = 512
MAX_GPUS = 64  # TaskSpec's bound
_TASK_ID = re.compile(TASK_ID_PATTERN)


class IntakeRefused(HivemindError, ValueError):
    """The request cannot be taken; the message says why."""


@dataclass(frozen=True)
class Resources:
    cpus: float
    memory_mb: int
    gpus: int
    gpu_memory_mb: int

    @property
    def wants_gpu(self) -> bool:
        return self.gpus > 0 or self.gpu_memory_mb > 0


def check_task_id(task_id: str) -> str:
    if not _TASK_ID.match(task_id):
        raise IntakeRefused(
            f"invalid task id {task_id[:80]!r}: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return task_id


def check_known_fields(request: Message) -> None:
    """Refuse a request whose known field came with the wrong wire type (e.g.
    cpu_usage sent as a string): protobuf parks such a value among the unknown
    fields and leaves the field at its default, which would silently turn
    "not a number" into "0". Unknown field numbers (a newer pool) are fine."""
    fields = request.DESCRIPTOR.fields_by_number
    for unknown in UnknownFieldSet(request):
        field = fields.get(unknown.field_number)
        if field is not None:
            raise IntakeRefused(f"{field.name} has the wrong type on the wire (not a {_kind(field)})")


def _kind(field) -> str:  # type: ignore[no-untyped-def]
    return {
        field.TYPE_FLOAT: "number",
        field.TYPE_DOUBLE: "number",
        field.TYPE_INT32: "whole number",
        field.TYPE_INT64: "whole number",
        field.TYPE_STRING: "string",
        field.TYPE_BYTES: "byte string",
    }.get(field.type, "value of its declared type")


def _amount(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise IntakeRefused(f"{name} must be a finite number, got {value}")
    if value < 0:
        raise IntakeRefused(f"{name} must not be negative, got {value:g}")
    return value


def resources(
    cpu_usage: float,
    gpu_usage: float,
    memory_gb: int,
    gpu_memory_gb: int,
    settings: Settings,
) -> Resources:
    cpu_score = _amount("cpu_usage", cpu_usage)
    gpu_score = _amount("gpu_usage", gpu_usage)
    memory_gb = int(_amount("memory_gb", memory_gb))
    gpu_memory_gb = int(_amount("gpu_memory_gb", gpu_memory_gb))

    cpus = max(1.0, round(cpu_score / settings.cpu_score_per_core, 2))
    if cpus > settings.max_cpus:
        raise IntakeRefused(
            f"cpu_usage {cpu_score:g} asks for {cpus:g} CPU cores; this site allows at most "
            f"{settings.max_cpus:g} per task ({settings.cpu_score_per_core} score per core)"
        )
    memory_mb = memory_gb * 1024 if memory_gb else DEFAULT_MEMORY_MB
    if memory_mb > settings.max_memory_mb:
        raise IntakeRefused(f"memory_gb {memory_gb} is above this site's limit of {settings.max_memory_mb // 1024} GB per task")
    gpus = math.ceil(gpu_score / settings.gpu_score_per_gpu) if gpu_score else 0
    if gpu_memory_gb and not gpus:
        gpus = 1
    if gpus > MAX_GPUS:
        raise IntakeRefused(f"gpu_usage {gpu_score:g} asks for {gpus} GPUs; at most {MAX_GPUS}")
    gpu_memory_mb = gpu_memory_gb * 1024
    if gpu_memory_mb > 4 * 1024 * 1024:
        raise IntakeRefused(f"gpu_memory_gb {gpu_memory_gb} is beyond any GPU")
    return Resources(cpus=cpus, memory_mb=memory_mb, gpus=gpus, gpu_memory_mb=gpu_memory_mb)


def check_zip(data: bytes, settings: Settings) -> None:
    """Size first (cheap), then the zip's structure, names, ratios and entry point."""
    if not data:
        raise IntakeRefused("task zip is empty")
    if len(data) > settings.payload_max_bytes:
        raise IntakeRefused(f"task zip is {len(data)} bytes, above this site's limit of {settings.payload_max_bytes} bytes")
    try:
        manifest = inspect_zip(data, ZipLimits.from_settings(settings))
        entry_command(manifest)  # a zip with nothing to run is refused now, not after queueing
    except WorkspaceError as exc:
        raise IntakeRefused(f"bad task zip: {exc}") from exc


def task_spec(task_id: str, payload_ref: str, res: Resources) -> TaskSpec:
    return TaskSpec(
        task_id=task_id,
        payload=payload_ref,
        cpus=res.cpus,
        memory_mb=res.memory_mb,
        gpus=res.gpus,
        gpu_memory_mb=res.gpu_memory_mb,
    )
