"""How the site's live capacity (from the worker registry) maps onto the
Node Pool's fields. Pure functions; documented in docs/bridge.md.

Mapping (both ways use the same two settings):
- cpu_score = free CPU cores x HIVEMIND_CPU_SCORE_PER_CORE (default 100), so a
  task's cpu score of 250 asks for 2.5 cores;
- gpu_score = free GPUs x HIVEMIND_GPU_SCORE_PER_GPU (default 100);
- memory_gb / gpu_memory_gb = free MiB // 1024;
- cpu_cores = all CPU cores of the live workers (what the site has).
The scores and memories advertised are what is free now, because the pool
matches a task against them before dispatching; the registration is re-sent
every HIVEMIND_REGISTRATION_INTERVAL seconds, so they follow the site.
"""

from __future__ import annotations

from dataclasses import dataclass

from hivemind_celery.registry import SiteCapacity

IDLE = "Idle"  # the only status the deployed pool dispatches to; exact spelling
MIN_FREE_CPUS = 1.0
MIN_FREE_MEMORY_MB = 512  # TaskSpec's default memory request


@dataclass(frozen=True)
class Advertised:
    cpu_cores: int
    memory_gb: int
    cpu_score: int
    gpu_score: int
    gpu_memory_gb: int
    gpu_name: str


def advertised(cap: SiteCapacity, cpu_score_per_core: int, gpu_score_per_gpu: int) -> Advertised:
    return Advertised(
        cpu_cores=int(cap.cpus_total),
        memory_gb=max(0, int(cap.memory_mb_free)) // 1024,
        cpu_score=max(0, int(cap.cpus_free * cpu_score_per_core)),
        gpu_score=max(0, int(cap.gpus_free)) * gpu_score_per_gpu,
        gpu_memory_gb=max(0, int(cap.gpu_memory_mb_free)) // 1024,
        # One name per node in the protocol: the model the site has most of.
        gpu_name=max(cap.gpu_models, key=lambda name: cap.gpu_models[name]) if cap.gpu_models else "",
    )


def can_take_more(cap: SiteCapacity) -> bool:
    """Room for one more smallest task on a live worker."""
    return cap.workers > 0 and cap.cpus_free >= MIN_FREE_CPUS and cap.memory_mb_free >= MIN_FREE_MEMORY_MB


def node_status(cap: SiteCapacity, running: int) -> str:
    """Exactly "Idle" only while another task fits; anything else keeps the pool
    from dispatching. "Running" also buys a longer silence allowance."""
    if can_take_more(cap):
        return IDLE
    if running > 0:
        return f"Running ({running} tasks)"
    if cap.workers == 0:
        return "No workers"
    return "Full"


def percent(used: float, total: float) -> float:
    return 0.0 if total <= 0 else max(0.0, min(100.0, 100.0 * used / total))


@dataclass(frozen=True)
class SiteUsage:
    """Share of the site's capacity reserved by tasks, in percent."""

    cpu: float
    memory: float
    gpu: float
    gpu_memory: float


def site_usage(cap: SiteCapacity) -> SiteUsage:
    return SiteUsage(
        cpu=percent(cap.cpus_total - cap.cpus_free, cap.cpus_total),
        memory=percent(cap.memory_mb_total - cap.memory_mb_free, cap.memory_mb_total),
        gpu=percent(cap.gpus_total - cap.gpus_free, cap.gpus_total),
        gpu_memory=percent(cap.gpu_memory_mb_total - cap.gpu_memory_mb_free, cap.gpu_memory_mb_total),
    )
