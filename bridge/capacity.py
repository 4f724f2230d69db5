"""How the site's capacity (from the worker registry) maps onto the Node
Pool's fields. Pure functions; documented in docs/bridge.md.

Mapping (both ways use the same two settings):
- cpu_score = CPU cores x HIVEMIND_CPU_SCORE_PER_CORE (default 100), so a
  task's cpu score of 250 asks for 2.5 cores;
- gpu_score = GPUs x HIVEMIND_GPU_SCORE_PER_GPU (default 100);
- memory_gb / gpu_memory_gb = MiB // 1024;
- cpu_cores = all CPU cores of the live workers.
The registration carries the site's **total** capacity, the same figures every
time: the deployed pool keeps its own `available_*` per node (less a task's
request at dispatch, back at its result) and clamps them to each new
registration, so registering what is free while tasks run would shrink the
node for good. For the same reason the figures never go down while the bridge
runs (`never_less`): a worker restarting is not a smaller site. What is free now
is said by ReportStatus (exactly "Idle" while another task fits) and by the
node-level usage.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.parts import SiteCapacityView

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


def advertised(cap: SiteCapacityView, cpu_score_per_core: int, gpu_score_per_gpu: int) -> Advertised:
    """What RegisterWorkerNode says: the live workers' totals, whatever runs."""
    return Advertised(
        cpu_cores=int(cap.cpus_total),
        memory_gb=max(0, int(cap.memory_mb_total)) // 1024,
        cpu_score=max(0, int(cap.cpus_total * cpu_score_per_core)),
        gpu_score=max(0, int(cap.gpus_total)) * gpu_score_per_gpu,
        gpu_memory_gb=max(0, int(cap.gpu_memory_mb_total)) // 1024,
        # One name per node in the protocol: the model the site has most of.
        gpu_name=max(cap.gpu_models, key=lambda name: cap.gpu_models[name]) if cap.gpu_models else "",
    )


def never_less(before: Advertised | None, now: Advertised) -> Advertised:
    """The figures to register: field by field never below what this bridge
    registered before. A worker restarting (or a moment with none live) must not
    shrink the registration: the deployed pool would clamp its available_* down
    and never give the room back. Status reports say when the room is not there."""
    if before is None:
        return now
    return Advertised(
        cpu_cores=max(before.cpu_cores, now.cpu_cores),
        memory_gb=max(before.memory_gb, now.memory_gb),
        cpu_score=max(before.cpu_score, now.cpu_score),
        gpu_score=max(before.gpu_score, now.gpu_score),
        gpu_memory_gb=max(before.gpu_memory_gb, now.gpu_memory_gb),
        gpu_name=now.gpu_name or before.gpu_name,
    )


def can_take_more(cap: SiteCapacityView) -> bool:
    """Room for one more smallest task on a live worker."""
    return cap.workers > 0 and cap.cpus_free >= MIN_FREE_CPUS and cap.memory_mb_free >= MIN_FREE_MEMORY_MB


def node_status(cap: SiteCapacityView, running: int) -> str:
    """Exactly "Idle" only while another task fits; anything else keeps the pool
    from dispatching. "Running" also buys a longer silence allowance."""
    if can_take_more(cap):
        return IDLE
    if running > 0:
        return f"Running ({running} tasks)"
    if cap.workers == 0:
        return "No workers"
    return "Full"


def paused_status(reason: str, running: int) -> str:
    """Not "Idle" while the owner's preferences pause the site (the pool sends nothing);
    the registered totals stay as they were."""
    return f"Paused ({running} tasks frozen): {reason}" if running else f"Paused: {reason}"


def shortfall(cap: SiteCapacityView, cpus: float, memory_mb: int, gpus: int, gpu_memory_mb: int) -> str:
    """Why a task that did not fit cannot be taken, truthfully: the site has no
    GPU at all, the task is larger than the whole site, or the site is full now."""
    if cap.workers == 0:
        return "site full: no live worker on this site now"
    if (gpus or gpu_memory_mb) and cap.gpus_total == 0:
        return "no GPU on this site (no live GPU worker): it takes CPU tasks only"
    too_big = [
        f"{what} {need:g} (this site has {have:g} in all)"
        for what, need, have in (
            ("CPUs", cpus, cap.cpus_total),
            ("MiB memory", memory_mb, cap.memory_mb_total),
            ("GPUs", gpus, cap.gpus_total),
            ("MiB GPU memory", gpu_memory_mb, cap.gpu_memory_mb_total),
        )
        if need > have
    ]
    if too_big:
        return "larger than this site: " + ", ".join(too_big)
    wanted = f"{cpus:g} CPUs, {memory_mb} MiB"
    if gpus or gpu_memory_mb:
        wanted += f", {gpus} GPUs, {gpu_memory_mb} MiB GPU memory"
    free = f"{cap.cpus_free:g} CPUs, {cap.memory_mb_free} MiB"
    if cap.gpus_total:
        free += f", {cap.gpus_free} GPUs, {cap.gpu_memory_mb_free} MiB GPU memory"
    return f"site full: {wanted} not free on this site now (free: {free})"


def percent(used: float, total: float) -> float:
    return 0.0 if total <= 0 else max(0.0, min(100.0, 100.0 * used / total))


@dataclass(frozen=True)
class SiteUsage:
    """Share of the site's capacity reserved by tasks, in percent."""

    cpu: float
    memory: float
    gpu: float
    gpu_memory: float


def site_usage(cap: SiteCapacityView) -> SiteUsage:
    return SiteUsage(
        cpu=percent(cap.cpus_total - cap.cpus_free, cap.cpus_total),
        memory=percent(cap.memory_mb_total - cap.memory_mb_free, cap.memory_mb_total),
        gpu=percent(cap.gpus_total - cap.gpus_free, cap.gpus_total),
        gpu_memory=percent(cap.gpu_memory_mb_total - cap.gpu_memory_mb_free, cap.gpu_memory_mb_total),
    )
