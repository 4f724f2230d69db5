"""A cgroup of one task step's own, whose totals outlive the step's processes.

The kernel charges a process's CPU time and memory to its cgroup and to every
ancestor of it, and keeps those totals when a child cgroup is removed (on v1
and v2: checked on this project's hybrid host, where a container run under
`cgroup_parent` left its full CPU time in the parent after Docker removed the
container's own cgroup). So a step run inside a cgroup of ours can be read
exactly once everything in it has ended, with nothing lost to sampling:

- the Docker runtime names one as each container's `cgroup_parent`
  (`docker_parent`); dockerd creates it, we read it after the container
  exits and remove it;
- the process runtime makes one (`create`) under the worker's own cgroup (so
  the worker's own limits still apply) and its launcher joins it before it
  becomes the task; every descendant, even one that left the process group,
  is then counted and can be killed.

Where no cgroup can be made or seen (not root, a read-only cgroupfs, a
worker in a container of its own) the callers fall back, and say so.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from hivemind_celery.usage.cgroup import (
    CgroupCounters,
    CgroupGone,
    CgroupPaths,
    CgroupReader,
    Mount,
    join_mount,
    parse_mountinfo,
    parse_proc_cgroup,
)

log = logging.getLogger(__name__)

TOP = "hivemind"  # every task cgroup lives in a directory of this name
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_V1_CONTROLLERS = ("cpuacct", "memory", "pids")


def leaf_prefix(worker_id: str) -> str:
    """What every step cgroup of this worker is named with first ("@" appears in no
    sanitised worker id, so no other worker's names start the same)."""
    return _SAFE.sub("-", worker_id)[:100] + "@"


def leaf_name(worker_id: str, task_id: str, role: str) -> str:
    """A cgroup directory name for one step of one task (no path separators)."""
    return leaf_prefix(worker_id) + _SAFE.sub("-", f"{task_id}.{role}")[:150]


@dataclass(frozen=True)
class TaskCgroup:
    """The directories of one step's cgroup: one per v1 hierarchy, or the v2 one."""

    paths: CgroupPaths
    dirs: tuple[Path, ...]  # every directory that makes up this cgroup (all hierarchies)

    @property
    def procs_files(self) -> list[str]:
        """The cgroup.procs files a process writes its PID into to join."""
        return [str(directory / "cgroup.procs") for directory in self.dirs]

    def read(self) -> CgroupCounters:
        return CgroupReader(self.paths).read()

    def pids(self) -> set[int]:
        found: set[int] = set()
        for directory in self.dirs:
            try:
                found.update(int(p) for p in (directory / "cgroup.procs").read_text().split())
            except OSError:
                continue
        return found

    def kill_all(self, wait: float = 5.0) -> bool:
        """SIGKILL whatever is still inside; True once it is empty (bounded wait)."""
        deadline = time.monotonic() + wait
        while pids := self.pids():
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def remove(self) -> bool:
        """Remove the cgroup's directories; False if some are still busy."""
        removed = True
        for directory in self.dirs:
            try:
                directory.rmdir()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("could not remove cgroup %s: %s", directory, exc)
                removed = False
        return removed


def _mounts() -> tuple[dict[str, Mount], Mount | None, list[Mount]]:
    mounts = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    v1: dict[str, Mount] = {}
    v2: Mount | None = None
    for mount in mounts:
        if mount.fstype == "cgroup":
            for controller in _V1_CONTROLLERS:
                if controller in mount.options and controller not in v1:
                    v1[controller] = mount
        elif mount.fstype == "cgroup2" and v2 is None:
            v2 = mount
    return v1, v2, [m for m in mounts if m.fstype in ("cgroup", "cgroup2")]


def _paths(v1: dict[str, Path], v2: Path | None) -> CgroupPaths | None:
    if "cpuacct" in v1 and "memory" in v1:
        return CgroupPaths(1, v1["cpuacct"], v1["memory"], v1.get("pids"))
    if v2 is not None:
        return CgroupPaths(2, v2, v2, v2)
    return None


def docker_parent(worker_id: str, task_id: str, role: str) -> str:
    """The `cgroup_parent` given to dockerd for one step (cgroupfs driver)."""
    return f"/{TOP}/{leaf_name(worker_id, task_id, role)}"


def docker_parents_usable(cgroup_driver: str) -> bool:
    """Whether steps can be given a `docker_parent`: dockerd's cgroupfs driver
    (the systemd driver wants slice names) and the host's hierarchies visible
    and writable from here, so the parent can be read and removed."""
    if cgroup_driver != "cgroupfs":
        return False
    try:
        v1, v2, _ = _mounts()
    except OSError:
        return False
    roots = [m for m in (v1.get("cpuacct"), v1.get("memory")) if m is not None]
    if len(roots) < 2:
        roots = [v2] if v2 is not None else []
    return bool(roots) and all(m.root == "/" and os.access(m.point, os.W_OK) for m in roots)


def leftover_docker_parents(prefix: str, keep: set[str]) -> list[TaskCgroup]:
    """Task cgroups left by dockerd runs whose name starts with `prefix` and is not in `keep`."""
    try:
        v1, v2, _ = _mounts()
    except OSError:
        return []
    mount = v1.get("cpuacct") or v2
    if mount is None or mount.root != "/":
        return []
    top = Path(mount.point) / TOP
    names = [d.name for d in top.iterdir() if d.is_dir()] if top.is_dir() else []
    found = [locate(f"/{TOP}/{name}") for name in names if name.startswith(prefix) and name not in keep]
    return [cgroup for cgroup in found if cgroup is not None]


def locate(parent: str) -> TaskCgroup | None:
    """The cgroup dockerd made for `cgroup_parent=parent`, as this process sees it;
    None where the host's cgroup hierarchies are not visible from here (their
    mounts must show the hierarchy's root) or it does not exist."""
    try:
        v1_mounts, v2_mount, all_mounts = _mounts()
    except OSError:
        return None
    relative = parent.strip("/")
    v1 = {name: Path(m.point) / relative for name, m in v1_mounts.items() if m.root == "/"}
    v2 = Path(v2_mount.point) / relative if v2_mount is not None and v2_mount.root == "/" else None
    paths = _paths(v1, v2 if v2 is not None and (v2 / "cpu.stat").exists() else None)
    if paths is None or not paths.cpu.is_dir() or not paths.memory.is_dir():
        return None
    # dockerd makes the parent in every hierarchy; all of them are removed after.
    dirs = tuple(Path(m.point) / relative for m in all_mounts if m.root == "/")
    return TaskCgroup(paths, tuple(d for d in dirs if d.is_dir()))


def _own_layout(name: str) -> tuple[CgroupPaths, tuple[Path, ...]] | None:
    """Where `<own cgroup>/hivemind/<name>` lies in the hierarchies that measure:
    v1 cpuacct, memory (and pids) when this host has them, else v2."""
    try:
        v1_own, unified_own = parse_proc_cgroup(Path("/proc/self/cgroup").read_text())
        v1_mounts, v2_mount, _ = _mounts()
    except OSError:
        return None
    wanted = {
        controller: join_mount(mount, v1_own[controller]) / TOP / name
        for controller, mount in v1_mounts.items()
        if controller in v1_own
    }
    v2 = None
    if not ("cpuacct" in wanted and "memory" in wanted):
        wanted = {}
        if v2_mount is None or unified_own is None:
            return None
        v2 = join_mount(v2_mount, unified_own) / TOP / name
    paths = _paths(wanted, v2)
    if paths is None:
        return None
    return paths, tuple(dict.fromkeys([*wanted.values(), *([v2] if v2 is not None else [])]))


def create(name: str) -> TaskCgroup | None:
    """A new, empty cgroup `<own cgroup>/hivemind/<name>`; None if none can be made here."""
    layout = _own_layout(name)
    if layout is None:
        return None
    paths, dirs = layout
    leftover = find(name)  # an earlier attempt's (its runner died): its counts must not mix in
    if leftover is not None:
        leftover.kill_all()
        leftover.remove()
    made: list[Path] = []
    try:
        for directory in dirs:
            directory.parent.mkdir(exist_ok=True)
            directory.mkdir()
            made.append(directory)
        if paths.version == 2 and not (paths.cpu / "cpu.stat").exists():
            raise OSError("this cgroup v2 tree keeps no cpu.stat")
    except OSError as exc:
        log.info("no cgroup of the task's own (%s); falling back to the reaped processes' rusage", exc)
        TaskCgroup(paths, tuple(made)).remove()
        return None
    return TaskCgroup(paths, dirs)


def find(name: str) -> TaskCgroup | None:
    """The cgroup `create(name)` made (in this or another process), if it exists."""
    layout = _own_layout(name)
    if layout is None or not any(d.is_dir() for d in layout[1]):
        return None
    return TaskCgroup(layout[0], tuple(d for d in layout[1] if d.is_dir()))


def read_or_none(cgroup: TaskCgroup) -> CgroupCounters | None:
    try:
        return cgroup.read()
    except (CgroupGone, OSError, ValueError) as exc:
        log.warning("could not read the task's cgroup: %s", exc)
        return None
