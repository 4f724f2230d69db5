"""A snapshot of this machine: CPU, memory, disk, network, load and GPUs.

psutil for the host, NVML (GPUtil as fallback) for GPUs; a machine without a
GPU reports an empty list. The worker registry takes its capacity from here,
the health check its thresholds, and Prometheus its host gauges.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

from hivemind_celery.core.units import MiB
from hivemind_celery.usage import gpu
from hivemind_celery.usage.gpu import GpuInfo


@dataclass(frozen=True)
class HostSnapshot:
    timestamp: float
    cpu_count: int
    cpu_percent: float  # since the previous snapshot in this process (psutil's own interval)
    load_average: tuple[float, float, float]
    memory_total_bytes: int
    memory_available_bytes: int
    memory_percent: float
    disk_path: str
    disk_total_bytes: int
    disk_free_bytes: int
    disk_percent: float
    net_bytes_sent: int
    net_bytes_recv: int
    gpus: list[GpuInfo] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def snapshot(disk_path: str = "/", with_gpus: bool = True) -> HostSnapshot:
    """Read the host now. `cpu_percent` is over the time since the previous
    call in this process (0.0 on the very first), so it never blocks."""
    memory = psutil.virtual_memory()
    disk = psutil.disk_usage(disk_path)
    net = psutil.net_io_counters()
    return HostSnapshot(
        timestamp=time.time(),
        cpu_count=psutil.cpu_count() or 1,
        cpu_percent=psutil.cpu_percent(interval=None),
        load_average=tuple(os.getloadavg()),  # type: ignore[arg-type]
        memory_total_bytes=memory.total,
        memory_available_bytes=memory.available,
        memory_percent=memory.percent,
        disk_path=disk_path,
        disk_total_bytes=disk.total,
        disk_free_bytes=disk.free,
        disk_percent=disk.percent,
        net_bytes_sent=net.bytes_sent if net else 0,
        net_bytes_recv=net.bytes_recv if net else 0,
        gpus=gpu.list_gpus() if with_gpus else [],
    )


def usable_cpus() -> float:
    """CPUs this process may run on (its affinity), not the whole machine's."""
    try:
        return float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return float(psutil.cpu_count() or 1)


def total_memory_mb() -> int:
    return int(psutil.virtual_memory().total // MiB)
