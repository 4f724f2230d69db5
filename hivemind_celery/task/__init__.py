"""One task run: the Celery task (celery_task), the guarded run (run), its job, outcomes
and stored result, cancellation, output streams, the task's hold on its GPUs (gpus), and
the usage meter with its observers.

What other packages may use is listed here. Reading a task from outside (its outcome,
its output, asking it to stop) is imported at once and loads no runtime; the run itself
(the Celery task, the meter, the observers, the GPU hold: Docker, psutil, NVML) only
when first asked for, so the bridge and the console never load the worker."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hivemind_celery.core.lazy import lazy_names
from hivemind_celery.task.cancellation import record_terminated, request_stop
from hivemind_celery.task.idempotency import OUTCOME_TTL, TaskGuard
from hivemind_celery.task.outcomes import (
    TaskUnsuccessful,
    cancelled_outcome,
    celery_outcome,
    failed_outcome,
    finished_outcome,
    outcome_from_result,
    outcome_of,
    rejected_outcome,
)
from hivemind_celery.task.result import store_result
from hivemind_celery.task.streams import STREAM_MAX_BYTES, OutputStream, output_tail, read_output

if TYPE_CHECKING:
    from hivemind_celery.task.celery_task import RunTask, run_task
    from hivemind_celery.task.gpus import GpuHold, NoFreeGpu, offered_now
    from hivemind_celery.task.meter import UsageMeter
    from hivemind_celery.task.observers import RUNNING_STATE, USAGE_EVENT, default_observers, record_totals
    from hivemind_celery.task.run import run_guarded

__all__ = [
    "OUTCOME_TTL",
    "RUNNING_STATE",
    "STREAM_MAX_BYTES",
    "USAGE_EVENT",
    "GpuHold",
    "NoFreeGpu",
    "OutputStream",
    "RunTask",
    "TaskGuard",
    "TaskUnsuccessful",
    "UsageMeter",
    "cancelled_outcome",
    "celery_outcome",
    "default_observers",
    "failed_outcome",
    "finished_outcome",
    "offered_now",
    "outcome_from_result",
    "outcome_of",
    "output_tail",
    "read_output",
    "record_terminated",
    "record_totals",
    "rejected_outcome",
    "request_stop",
    "run_guarded",
    "run_task",
    "store_result",
]

__getattr__ = lazy_names(
    __name__,
    {
        "RunTask": "hivemind_celery.task.celery_task",
        "run_task": "hivemind_celery.task.celery_task",
        "GpuHold": "hivemind_celery.task.gpus",
        "NoFreeGpu": "hivemind_celery.task.gpus",
        "offered_now": "hivemind_celery.task.gpus",
        "UsageMeter": "hivemind_celery.task.meter",
        "RUNNING_STATE": "hivemind_celery.task.observers",
        "USAGE_EVENT": "hivemind_celery.task.observers",
        "default_observers": "hivemind_celery.task.observers",
        "record_totals": "hivemind_celery.task.observers",
        "run_guarded": "hivemind_celery.task.run",
    },
)
