"""Measuring a task's container: the choice of usage source, and Docker's stats
API as the fallback where the container's cgroup files are not visible (a
worker inside a container of its own). The sources themselves are generic
(usage/sampler.py); only this part knows about containers."""

from __future__ import annotations

import os
from typing import Any

from hivemind_celery.usage.cgroup import CgroupPaths, CgroupReader
from hivemind_celery.usage.sampler import (
    CgroupSource,
    ProcessSource,
    Reading,
    Source,
    SourceGone,
    UsageSource,
)


class DockerStatsSource:
    """Docker's stats API: about a second per read, so only a fallback."""

    name: Source = "docker-stats"
    cheap = False
    outlives = False

    def __init__(self, container: Any) -> None:
        self.container = container

    def read(self) -> Reading:
        import docker.errors

        try:
            stats = self.container.stats(stream=False)
        except docker.errors.NotFound as exc:
            raise SourceGone(str(exc)) from exc
        cpu = (stats.get("cpu_stats") or {}).get("cpu_usage") or {}
        memory = stats.get("memory_stats") or {}
        if not cpu.get("total_usage") and not memory:
            raise SourceGone("container is not running")  # Docker answers empty stats then
        return Reading(
            cpu_seconds=cpu.get("total_usage", 0) / 1e9,
            cpu_user_seconds=cpu.get("usage_in_usermode", 0) / 1e9,
            cpu_system_seconds=cpu.get("usage_in_kernelmode", 0) / 1e9,
            memory_bytes=int(memory.get("usage", 0)),
            memory_peak_bytes=int(memory.get("max_usage", 0)),  # v1 only
            pids=int((stats.get("pids_stats") or {}).get("current", 0)),
        )


def source_for(
    pid: int,
    container_id: str | None = None,
    docker_client: Any = None,
    with_gpu: bool = False,
    cgroup: CgroupPaths | None = None,
) -> UsageSource | None:
    """The cheapest source that can measure this task: its container's cgroup,
    else Docker's stats API (cgroup files not visible, e.g. a worker inside a
    container), else psutil for a bare process (the process runtime: its
    cgroup is the worker's own, so it is not used); None if nothing can.
    `cgroup`: the step's own cgroup (a runtime made it), read first: it
    outlives the step's processes. A GPU task's container is read by its own
    cgroup, whose process list names the GPU's users."""
    if cgroup is not None and not (with_gpu and container_id is not None):
        return CgroupSource(CgroupReader(cgroup), with_gpu=with_gpu, outlives=True)
    if container_id is not None:
        reader = CgroupReader.for_pid(pid) if pid > 0 else None
        if reader is not None:
            return CgroupSource(reader, with_gpu=with_gpu)
        if docker_client is None:
            return None
        import docker.errors

        try:
            return DockerStatsSource(docker_client.containers.get(container_id))
        except docker.errors.NotFound:
            return None
    if pid > 0 and pid != os.getpid():
        try:
            return ProcessSource(pid)
        except SourceGone:
            return None
    return None
