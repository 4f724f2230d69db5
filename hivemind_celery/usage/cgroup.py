"""Reading one process's cgroup counters: CPU time, memory, pids, OOM kills.

The cgroup is found from a PID: /proc/<pid>/cgroup names its path in each
hierarchy and /proc/self/mountinfo says where each hierarchy is mounted. On
cgroup v1 the cpuacct, memory and pids controllers each have their own
directory; on v2 one unified directory holds every file. A hybrid host (v1
controllers plus an empty v2 mount, like this one) is read as v1.

Reading costs a handful of small file reads (microseconds), against about a
second for Docker's stats API. Docker removes a container's cgroup as soon as
its main process exits, so a reader can fail with `CgroupGone` at any time.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from hivemind_celery.core.errors import HivemindError

# cpuacct.stat counts in USER_HZ ticks.
USER_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_GONE_ERRNOS = {errno.ENOENT, errno.ENODEV, errno.ESRCH}


class CgroupGone(HivemindError):
    """The cgroup (or the process it was found from) no longer exists."""


@dataclass(frozen=True)
class CgroupCounters:
    """Cumulative counters of one cgroup at one moment."""

    cpu_seconds: float
    cpu_user_seconds: float
    cpu_system_seconds: float
    memory_bytes: int
    memory_peak_bytes: int | None  # None: the kernel keeps no peak (v2 before 5.19)
    pids: int | None  # None: no pids controller
    oom_kills: int


@dataclass(frozen=True)
class CgroupPaths:
    """The directories to read for one cgroup."""

    version: int
    cpu: Path  # v1: the cpuacct directory; v2: the unified directory
    memory: Path
    pids: Path | None

    @property
    def procs_file(self) -> Path:
        """cgroup.procs: the PIDs in the cgroup (for per-process GPU use)."""
        return self.memory / "cgroup.procs"


@dataclass(frozen=True)
class Mount:
    root: str
    point: str
    fstype: str
    options: frozenset[str]


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    return field.encode().decode("unicode_escape") if "\\" in field else field


def parse_mountinfo(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        options = frozenset(tail[2].split(","))
        mounts.append(Mount(_unescape(fields[3]), _unescape(fields[4]), tail[0], options))
    return mounts


def parse_proc_cgroup(text: str) -> tuple[dict[str, str], str | None]:
    """(v1 controller -> path, v2 unified path or None) from /proc/<pid>/cgroup."""
    v1: dict[str, str] = {}
    unified = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            unified = path
            continue
        for controller in controllers.split(","):
            if controller:
                v1[controller] = path
    return v1, unified


def join_mount(mount: Mount, path: str) -> Path:
    # The cgroup path is relative to the hierarchy's root; a mount may show
    # only a subtree of it (mount root not "/"), as inside a cgroup namespace.
    if mount.root != "/" and (path == mount.root or path.startswith(mount.root + "/")):
        path = path[len(mount.root) :]
    return Path(mount.point) / path.lstrip("/")


def find_cgroup(pid: int, proc: Path = Path("/proc")) -> CgroupPaths | None:
    """The cgroup directories of `pid`, or None where they are not visible
    (another mount namespace, no cgroup filesystem, the process is gone)."""
    try:
        v1, unified = parse_proc_cgroup((proc / str(pid) / "cgroup").read_text())
        mounts = parse_mountinfo((proc / "self" / "mountinfo").read_text())
    except OSError:
        return None
    v1_mounts = {}
    v2_mount = None
    for mount in mounts:
        if mount.fstype == "cgroup":
            for controller in ("cpuacct", "memory", "pids"):
                if controller in mount.options:
                    v1_mounts[controller] = mount
        elif mount.fstype == "cgroup2" and v2_mount is None:
            v2_mount = mount
    if "cpuacct" in v1 and "memory" in v1 and "cpuacct" in v1_mounts and "memory" in v1_mounts:
        pids = join_mount(v1_mounts["pids"], v1["pids"]) if "pids" in v1 and "pids" in v1_mounts else None
        paths = CgroupPaths(
            1, join_mount(v1_mounts["cpuacct"], v1["cpuacct"]), join_mount(v1_mounts["memory"], v1["memory"]), pids
        )
    elif unified is not None and v2_mount is not None:
        directory = join_mount(v2_mount, unified)
        if not (directory / "cpu.stat").exists():
            return None  # a hybrid host's empty v2 tree
        paths = CgroupPaths(2, directory, directory, directory)
    else:
        return None
    if not paths.cpu.is_dir() or not paths.memory.is_dir():
        return None
    return paths


def _read(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read().decode()
    except OSError as exc:
        if exc.errno in _GONE_ERRNOS:
            raise CgroupGone(str(path)) from exc
        raise


def _read_optional(path: Path) -> str | None:
    try:
        return _read(path)
    except CgroupGone:
        if path.parent.is_dir():
            return None  # the directory is there, the file is not: an older kernel
        raise


def _keyed(text: str) -> dict[str, int]:
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            values[name] = int(value)
    return values


def _int_or_max(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    return None if text == "max" or not text else int(text)


class CgroupReader:
    """Reads the counters of one cgroup; each read opens each file once."""

    def __init__(self, paths: CgroupPaths) -> None:
        self.paths = paths

    @classmethod
    def for_pid(cls, pid: int) -> CgroupReader | None:
        paths = find_cgroup(pid)
        return cls(paths) if paths is not None else None

    def read(self) -> CgroupCounters:
        return self._read_v1() if self.paths.version == 1 else self._read_v2()

    def pids_in_cgroup(self) -> list[int]:
        return [int(line) for line in _read(self.paths.procs_file).split()]

    def _pids(self) -> int | None:
        if self.paths.pids is None:
            return None
        return _int_or_max(_read_optional(self.paths.pids / "pids.current"))

    def _read_v1(self) -> CgroupCounters:
        cpu, mem = self.paths.cpu, self.paths.memory
        usage_ns = int(_read(cpu / "cpuacct.usage"))
        ticks = _keyed(_read(cpu / "cpuacct.stat"))
        oom = _read_optional(mem / "memory.oom_control")  # oom_kill appeared in Linux 4.13
        return CgroupCounters(
            cpu_seconds=usage_ns / 1e9,
            cpu_user_seconds=ticks.get("user", 0) / USER_HZ,
            cpu_system_seconds=ticks.get("system", 0) / USER_HZ,
            memory_bytes=int(_read(mem / "memory.usage_in_bytes")),
            memory_peak_bytes=int(_read(mem / "memory.max_usage_in_bytes")),
            pids=self._pids(),
            oom_kills=_keyed(oom).get("oom_kill", 0) if oom else 0,
        )

    def _read_v2(self) -> CgroupCounters:
        directory = self.paths.cpu
        stat = _keyed(_read(directory / "cpu.stat"))
        events = _read_optional(directory / "memory.events")
        return CgroupCounters(
            cpu_seconds=stat.get("usage_usec", 0) / 1e6,
            cpu_user_seconds=stat.get("user_usec", 0) / 1e6,
            cpu_system_seconds=stat.get("system_usec", 0) / 1e6,
            # A cgroup whose parent has not enabled the memory controller (one
            # made under a process's own) has CPU counters only.
            memory_bytes=_int_or_max(_read_optional(directory / "memory.current")) or 0,
            memory_peak_bytes=_int_or_max(_read_optional(directory / "memory.peak")),
            pids=self._pids(),
            oom_kills=_keyed(events).get("oom_kill", 0) if events else 0,
        )
