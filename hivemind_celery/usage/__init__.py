"""Measuring a task: cgroup counters, NVML, the host, the sampler thread and per-step totals.
What other packages may use is listed here (`gpu`, `host` and `task_cgroup` are modules,
used as namespaces: `gpu.list_gpus()`). Only the worker side imports this package: it
loads psutil."""

from __future__ import annotations

from hivemind_celery.usage import gpu, host, task_cgroup
from hivemind_celery.usage.cgroup import CgroupCounters, CgroupGone, CgroupPaths, CgroupReader, find_cgroup
from hivemind_celery.usage.gpu import GpuInfo, list_gpus, offered_gpus
from hivemind_celery.usage.sampler import (
    CgroupSource,
    ProcessSource,
    Reading,
    SourceGone,
    UsageSample,
    UsageSampler,
    UsageSource,
)
from hivemind_celery.usage.task_cpu import NonTaskCpu
from hivemind_celery.usage.totals import step_totals, whole_run

__all__ = [
    "CgroupCounters",
    "CgroupGone",
    "CgroupPaths",
    "CgroupReader",
    "CgroupSource",
    "GpuInfo",
    "NonTaskCpu",
    "ProcessSource",
    "Reading",
    "SourceGone",
    "UsageSample",
    "UsageSampler",
    "UsageSource",
    "find_cgroup",
    "gpu",
    "host",
    "list_gpus",
    "offered_gpus",
    "step_totals",
    "task_cgroup",
    "whole_run",
]
