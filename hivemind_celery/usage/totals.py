"""A task's usage totals from its steps' measurements.

Each step is measured twice: exactly by its runtime once it ended (its own
cgroup, or the rusage of its reaped processes; `JobResult.step_usage`) and
live by the sampler (the main step only). The exact figures win; the sampler
adds what only it sees (GPU use, a peak of processes, how many readings).

The reward's inputs all cover one interval, the task's `duration` (from the
runtime taking the job to its workspace copied back, set-up step included):
CPU seconds of every process of both steps, CPU % = those seconds over
(duration x reserved cores), memory % = the higher step's peak over the
limit. Pure functions: no I/O.
"""

from __future__ import annotations

from hivemind_celery.core.model import UsageSummary
from hivemind_celery.core.reward import measured_percentages


def _percentages(usage: UsageSummary, cpus: float, memory_limit_bytes: int) -> UsageSummary:
    cpu, memory = measured_percentages(usage, cpus, memory_limit_bytes, usage.wall_seconds)
    return usage.model_copy(update={"cpu_percent": cpu, "memory_percent": memory})


def step_totals(
    exact: UsageSummary | None, sampled: UsageSummary | None, cpus: float, memory_limit_bytes: int
) -> UsageSummary | None:
    """One step: the runtime's exact totals with the sampler's extras, or the
    sampler's last reading where the runtime could not measure (a lower bound)."""
    if exact is None:
        return sampled
    if sampled is None:
        return exact
    merged = exact.model_copy(
        update={
            "memory_peak_bytes": max(exact.memory_peak_bytes, sampled.memory_peak_bytes),
            "pids_peak": max(exact.pids_peak, sampled.pids_peak),
            "oom_kills": max(exact.oom_kills, sampled.oom_kills),
            "gpu_percent": sampled.gpu_percent,
            "gpu_memory_peak_bytes": sampled.gpu_memory_peak_bytes,
            "samples": sampled.samples,
        }
    )
    return _percentages(merged, cpus, memory_limit_bytes)


def whole_run(
    setup: UsageSummary | None, main: UsageSummary | None, duration: float, cpus: float, memory_limit_bytes: int
) -> UsageSummary | None:
    """Both steps together over the task's duration (None if neither ran)."""
    steps = [step for step in (setup, main) if step is not None]
    if not steps:
        return None
    total = UsageSummary(
        cpu_seconds=sum(s.cpu_seconds for s in steps),
        cpu_user_seconds=sum(s.cpu_user_seconds for s in steps),
        cpu_system_seconds=sum(s.cpu_system_seconds for s in steps),
        memory_peak_bytes=max(s.memory_peak_bytes for s in steps),
        pids_peak=max(s.pids_peak for s in steps),
        oom_kills=sum(s.oom_kills for s in steps),
        gpu_percent=main.gpu_percent if main is not None else 0.0,
        gpu_memory_peak_bytes=max(s.gpu_memory_peak_bytes for s in steps),
        samples=sum(s.samples for s in steps),
        source=(main or steps[0]).source,
        wall_seconds=max(duration, 0.0),
    )
    return _percentages(total, cpus, memory_limit_bytes)
