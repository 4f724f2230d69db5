"""Watches how much disk a running task uses in its volumes, and says when it
is past its cap.

A Docker volume on overlay2 over ext4 (this project's usual host) cannot be
size-capped: the `size` option of the local driver needs project quotas,
which such hosts lack. So the worker measures the volumes' directories on the
host every HIVEMIND_WORKSPACE_CHECK_INTERVAL seconds and the runtime kills a
task past HIVEMIND_WORKSPACE_MAX_MB or HIVEMIND_WORKSPACE_MAX_FILES. A task
can overshoot by what it writes in one interval; the disk gate keeps a
reserve for that.

The walk runs as root over directories a stranger controls: `os.fwalk` with
follow_symlinks=False opens each level relative to its parent without
following links, so swapping a directory for a symlink mid-walk cannot lead
it out of the volume.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from dataclasses import dataclass

from hivemind_celery.core.units import MiB

log = logging.getLogger(__name__)

# Each level of the walk holds a file descriptor (and, before Python 3.13, a
# stack frame); a tree deeper than this is refused rather than walked.
MAX_DEPTH = 64

_warned_invisible = False


@dataclass(frozen=True)
class DiskUse:
    bytes: int = 0
    entries: int = 0  # files, directories, links
    too_deep: bool = False
    unreadable: str = ""  # what the worker may not list: a task hiding what it wrote


def measure(paths: list[str], stop_at_entries: int = 0) -> DiskUse:
    """Allocated bytes (sparse files count what they really hold; hard links
    once) and entries under `paths`. Stops counting past `stop_at_entries`
    when that is set, so a million tiny files cost one bounded walk. A
    missing path (the volume already removed) raises FileNotFoundError."""
    total = entries = 0
    seen: set[tuple[int, int]] = set()
    denied: list[str] = []

    def on_error(exc: OSError) -> None:  # opening a subdirectory failed; else it was removed meanwhile
        if isinstance(exc, PermissionError):
            denied.append(str(exc.filename))

    for top in paths:
        base_depth = top.rstrip("/").count("/")
        try:
            for dirpath, dirnames, filenames, dirfd in os.fwalk(top, follow_symlinks=False, onerror=on_error):
                if denied:
                    return DiskUse(total, entries, unreadable=os.path.basename(denied[0]))
                if dirpath.count("/") - base_depth >= MAX_DEPTH:
                    return DiskUse(total, entries, too_deep=True)
                subdirs = set(dirnames)
                for name in (*dirnames, *filenames):
                    try:
                        info = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                    except PermissionError:
                        return DiskUse(total, entries, unreadable=_inside(top, dirpath, name))
                    except FileNotFoundError:
                        continue
                    if name in subdirs and not stat.S_ISDIR(info.st_mode):
                        dirnames.remove(name)  # a link to a directory: never opened
                    entries += 1
                    if not stat.S_ISDIR(info.st_mode) and info.st_nlink > 1:
                        key = (info.st_dev, info.st_ino)
                        if key in seen:
                            continue
                        seen.add(key)
                    total += info.st_blocks * 512
                    if stop_at_entries and entries > stop_at_entries:
                        return DiskUse(total, entries)
        except PermissionError:  # the volume's top directory itself
            return DiskUse(total, entries, unreadable=".")
    if denied:
        return DiskUse(total, entries, unreadable=os.path.basename(denied[0]))
    return DiskUse(total, entries)


def _inside(top: str, dirpath: str, name: str) -> str:
    """The path as the task sees it, relative to its volume (no host paths in reasons)."""
    return os.path.relpath(os.path.join(dirpath, os.path.basename(name)), top)


class DiskWatch(threading.Thread):
    """Measures `paths` every `interval` seconds until stopped; `exceeded`
    then holds why the task is past its cap (the runtime kills it)."""

    def __init__(self, paths: list[str], max_mb: int, max_files: int, interval: float, task_id: str = "") -> None:
        super().__init__(daemon=True, name=f"disk-watch-{task_id}")
        self.paths, self.max_mb, self.max_files = paths, max_mb, max_files
        self.interval, self.task_id = interval, task_id
        self.exceeded: str | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        pause = self.interval
        while not self._halt.wait(pause):
            began = time.monotonic()
            try:
                use = measure(self.paths, self.max_files)
            except FileNotFoundError as exc:  # a volume removed under us: the run is ending
                log.debug("disk watch stopped: %s", exc, extra={"task_id": self.task_id})
                return
            except OSError as exc:
                log.warning("could not measure the task's workspace: %s", exc, extra={"task_id": self.task_id})
                continue
            self.exceeded = self.verdict(use)
            if self.exceeded:
                return
            # A big tree takes a while to walk (~5 µs an entry): keep the
            # watch under a fifth of one core however many files there are.
            pause = max(self.interval, 4 * (time.monotonic() - began))

    def verdict(self, use: DiskUse) -> str | None:
        if use.unreadable:
            return (
                f"the task made {use.unreadable!r} in its workspace unreadable to the worker, so its disk use cannot be measured"
            )
        if use.too_deep:
            return (
                f"the task nested directories more than {MAX_DEPTH} levels deep in its workspace, past what the worker measures"
            )
        if self.max_mb and use.bytes > self.max_mb * MiB:
            return (
                f"the task used more than {self.max_mb} MiB of disk in its workspace "
                f"({use.bytes // MiB} MiB measured; cap HIVEMIND_WORKSPACE_MAX_MB)"
            )
        if self.max_files and use.entries > self.max_files:
            return f"the task created more than {self.max_files} files in its workspace (cap HIVEMIND_WORKSPACE_MAX_FILES)"
        return None

    def stop(self) -> None:
        self._halt.set()


def start_watch(paths: list[str | None], max_mb: int, max_files: int, interval: float, task_id: str = "") -> DiskWatch | None:
    """A started watch over the volumes' host directories, or None when
    there is no cap or the worker cannot see them (it runs in a container
    without the Docker volumes directory mounted): said once per process."""
    global _warned_invisible
    if not (max_mb or max_files):
        return None
    visible = [p for p in paths if p and os.path.isdir(p)]
    if len(visible) < len(paths):
        if not _warned_invisible:
            _warned_invisible = True
            log.warning(
                "the workspace cap is not enforced: this worker cannot see the task volumes' "
                "directories (%s); mount the Docker volumes directory into the worker",
                ", ".join(str(p) for p in paths),
                extra={"task_id": task_id},
            )
        return None
    watch = DiskWatch(visible, max_mb, max_files, interval, task_id)
    watch.start()
    return watch
