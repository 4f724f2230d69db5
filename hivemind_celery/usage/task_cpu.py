"""How busy the host is with things other than this worker's tasks (the owner's
own use), for the "suspend while non-task CPU is above X %" preference.

Host CPU time comes from psutil (every core's busy time); the tasks' CPU time
from their step cgroups (usage/task_cgroup.py: the Docker runtime's cgroup
parents and the process runtime's own cgroups), which the kernel keeps exact.
Non-task CPU % = (host busy - tasks) over the interval, of all cores. An interval
in which a task's cgroup disappeared (its step ended) is not judged: its last
CPU time went with it and would read as the owner's.
"""

from __future__ import annotations

import time
from pathlib import Path

import psutil

from hivemind_celery.usage import task_cgroup


def _host_busy_seconds() -> float:
    times = psutil.cpu_times()
    return float(sum(times)) - float(times.idle) - float(getattr(times, "iowait", 0.0))


def _own_cgroup_dir() -> Path | None:
    """Where the process runtime makes its step cgroups (`<own cgroup>/hivemind`)."""
    layout = task_cgroup._own_layout("probe")  # noqa: SLF001 - the same layout create() uses
    if layout is None:
        return None
    return layout[0].cpu.parent


def task_cgroups(worker_id: str) -> dict[str, task_cgroup.TaskCgroup]:
    """This worker's step cgroups now, by path."""
    prefix = task_cgroup.leaf_prefix(worker_id)
    found = {str(c.paths.cpu): c for c in task_cgroup.leftover_docker_parents(prefix, set())}
    own = _own_cgroup_dir()
    if own is not None and own.is_dir():
        for directory in own.iterdir():
            if directory.is_dir() and directory.name.startswith(prefix):
                cgroup = task_cgroup.find(directory.name)
                if cgroup is not None:
                    found.setdefault(str(cgroup.paths.cpu), cgroup)
    return found


class NonTaskCpu:
    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self.cores = psutil.cpu_count() or 1
        self._at = time.monotonic()
        self._host = _host_busy_seconds()
        self._tasks = self._read_tasks()
        self.last = 0.0

    def _read_tasks(self) -> dict[str, float]:
        readings = {}
        for path, cgroup in task_cgroups(self.worker_id).items():
            counters = task_cgroup.read_or_none(cgroup)
            if counters is not None:
                readings[path] = counters.cpu_seconds
        return readings

    def percent(self) -> float:
        """Non-task CPU use since the last call, in % of all cores (0-100)."""
        at, host, tasks = time.monotonic(), _host_busy_seconds(), self._read_tasks()
        elapsed = at - self._at
        if elapsed <= 0:
            return self.last
        gone = set(self._tasks) - set(tasks)
        if not gone:
            # a step that began in this interval counts from its start (its whole time is new)
            used = sum(seconds - self._tasks.get(path, 0.0) for path, seconds in tasks.items())
            self.last = min(100.0, max(0.0, (host - self._host - used) / (elapsed * self.cores) * 100.0))
        self._at, self._host, self._tasks = at, host, tasks
        return self.last
