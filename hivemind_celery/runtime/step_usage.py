"""One step's totals, as a UsageSummary, from what the kernel kept of it.

Either the counters of the step's own cgroup (every process it ever had,
read after they ended) or the rusage of its reaped first process (which
includes every descendant that was waited for; `ru_maxrss` is the largest
single process, so the memory peak is a lower bound there).
"""

from __future__ import annotations

import resource

from hivemind_celery.core.model import UsageSummary
from hivemind_celery.core.reward import measured_percentages
from hivemind_celery.usage.cgroup import CgroupCounters


def _with_percentages(usage: UsageSummary, cpus: float, memory_limit_bytes: int) -> UsageSummary:
    cpu, memory = measured_percentages(usage, cpus, memory_limit_bytes, usage.wall_seconds)
    return usage.model_copy(update={"cpu_percent": cpu, "memory_percent": memory})


def from_counters(
    counters: CgroupCounters,
    wall_seconds: float,
    cpus: float,
    memory_limit_bytes: int,
    pids_peak: int = 0,
    before_join: float = 0.0,
    memory_peak_floor: int = 0,
) -> UsageSummary:
    """`before_join`: CPU seconds the step's first process spent before it
    entered the cgroup (charged elsewhere), counted as its own;
    `memory_peak_floor`: a peak known otherwise (rusage), for a cgroup without
    memory counters."""
    usage = UsageSummary(
        cpu_seconds=counters.cpu_seconds + before_join,
        cpu_user_seconds=counters.cpu_user_seconds + before_join,
        cpu_system_seconds=counters.cpu_system_seconds,
        memory_peak_bytes=max(counters.memory_peak_bytes or 0, counters.memory_bytes, memory_peak_floor),
        pids_peak=max(pids_peak, counters.pids or 0),
        oom_kills=counters.oom_kills,
        source="cgroup",
        wall_seconds=wall_seconds,
    )
    return _with_percentages(usage, cpus, memory_limit_bytes)


def from_rusage(rusage: resource.struct_rusage, wall_seconds: float, cpus: float, memory_limit_bytes: int) -> UsageSummary:
    usage = UsageSummary(
        cpu_seconds=rusage.ru_utime + rusage.ru_stime,
        cpu_user_seconds=rusage.ru_utime,
        cpu_system_seconds=rusage.ru_stime,
        memory_peak_bytes=int(rusage.ru_maxrss) * 1024,  # KiB on Linux
        source="rusage",
        wall_seconds=wall_seconds,
    )
    return _with_percentages(usage, cpus, memory_limit_bytes)
