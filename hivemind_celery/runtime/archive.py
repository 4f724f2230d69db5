"""Copying a finished task's workspace out, bounded.

The copy is a tar that holds only regular files and directories with safe
names, relative to the workspace, up to `max_bytes` of file content. Files
that do not fit are skipped whole (a later small file can still come back)
and noted. It is made one of two ways:

- `bounded_copy` filters a tar stream (Docker's `get_archive`). Reading stops
  after READ_FACTOR x max_bytes of raw stream, so a task that fills its disk
  cannot keep the worker reading forever.
- `copy_dir` reads a directory in place (the process runtime's workspace, or
  a task volume's directory on the host). The tree belongs to a stranger and
  the worker may be root: every level is opened relative to its parent with
  O_NOFOLLOW, so no link ever leads the copy out of the directory, and files
  left out are never opened.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from hivemind_celery.core.errors import HivemindError
from hivemind_celery.payloads.workspace import path_problem

READ_FACTOR = 8
# copy_dir holds one open directory per level: entries deeper than this are
# left out (by bounded_copy too, so both ways give the same copy).
MAX_DEPTH = 64
_TOO_DEEP = f"nested more than {MAX_DEPTH} levels deep"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a fifo must not hang us


@dataclass
class WorkspaceCopy:
    tar: bytes
    skipped: list[str] = field(default_factory=list)  # "path: why"
    files: int = 0
    file_bytes: int = 0


class _ChunkReader(io.RawIOBase):
    """A file object over an iterator of byte chunks, stopping at a byte cap."""

    def __init__(self, chunks: Iterable[bytes], cap: int) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._pending = b""
        self.cap, self.read_bytes, self.capped = cap, 0, False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        while not self._pending:
            if self.read_bytes >= self.cap:
                self.capped = True
                return 0
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        room = min(len(buffer), len(self._pending), self.cap - self.read_bytes)
        buffer[:room] = self._pending[:room]
        self._pending = self._pending[room:]
        self.read_bytes += room
        return room


def _relative(name: str, top: str | None) -> str | None:
    name = name.removeprefix("./").rstrip("/")
    if top is None:
        return name or None
    if name == top:
        return None
    if not name.startswith(top + "/"):
        return None
    return name[len(top) + 1 :]


def bounded_copy(
    chunks: Iterable[bytes], max_bytes: int, top: str | None = "workspace", leave_out: str | None = None
) -> WorkspaceCopy:
    """Filter a workspace tar stream; `top` is the directory the stream's names
    start with (Docker puts the copied directory's own name first). A top-level
    `leave_out` (the worker's own .hivemind/) is left out without a note."""
    reader = _ChunkReader(chunks, READ_FACTOR * max_bytes + 1024 * 1024)
    out = io.BytesIO()
    copy = WorkspaceCopy(b"")
    target = tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT)
    good = 0  # end of the last member written whole
    try:
        with tarfile.open(fileobj=io.BufferedReader(reader), mode="r|*") as source:
            for member in source:
                name = _relative(member.name, top)
                if name is None or (leave_out and (name == leave_out or name.startswith(leave_out + "/"))):
                    continue
                why = _refusal(name, member, copy.file_bytes, max_bytes)
                if why:
                    copy.skipped.append(f"{name!r}: {why}")
                    continue
                clean = tarfile.TarInfo(name)
                clean.type = tarfile.DIRTYPE if member.isdir() else tarfile.REGTYPE
                clean.mode = 0o755 if member.isdir() or member.mode & 0o111 else 0o644
                clean.mtime, clean.size = member.mtime, member.size if member.isfile() else 0
                target.addfile(clean, source.extractfile(member) if member.isfile() else None)
                good = out.tell()
                if member.isfile():
                    copy.files += 1
                    copy.file_bytes += member.size
        target.close()
        copy.tar = out.getvalue()
    except (tarfile.TarError, OSError, EOFError) as exc:
        why = f"stopped reading after {reader.read_bytes} bytes" if reader.capped else f"unreadable archive: {exc}"
        copy.skipped.append(f"(rest of the workspace): {why}")
        copy.tar = out.getvalue()[:good] + bytes(2 * tarfile.BLOCKSIZE)  # end-of-archive marker
    return copy


def _refusal(name: str, member: tarfile.TarInfo, kept: int, max_bytes: int) -> str | None:
    why = path_problem(name)
    if why is None and name.count("/") >= MAX_DEPTH:
        why = _TOO_DEEP
    if why is None and not (member.isfile() or member.isdir()):
        why = "not a regular file or directory"
    if why is None and member.isfile() and kept + member.size > max_bytes:
        why = f"{member.size} bytes would exceed the result limit of {max_bytes} bytes"
    return why


class AccessDenied(HivemindError):
    """copy_dir(denied_is_error=True) met something the worker may not read."""


def copy_dir(
    root: str | os.PathLike[str], max_bytes: int, denied_is_error: bool = False, leave_out: str | None = None
) -> WorkspaceCopy:
    """The workspace directory `root` as a bounded tar (see the module doc).
    The task must have ended: the tree is read as it stands. What the worker
    may not read is noted and left out, or with denied_is_error raises
    AccessDenied (the caller has a better way: Docker's archive API). Raises
    OSError when `root` itself cannot be opened."""
    top = os.open(root, _DIR_FLAGS)
    try:
        return _DirCopier(max_bytes, denied_is_error, leave_out).copy(top)
    finally:
        os.close(top)


class _DirCopier:
    def __init__(self, max_bytes: int, denied_is_error: bool = False, leave_out: str | None = None) -> None:
        self.max_bytes, self.denied_is_error, self.leave_out = max_bytes, denied_is_error, leave_out
        self.out = io.BytesIO()
        self.target = tarfile.open(fileobj=self.out, mode="w", format=tarfile.PAX_FORMAT)
        self.result = WorkspaceCopy(b"")
        self.good = 0  # end of the last member written whole

    def copy(self, top_fd: int) -> WorkspaceCopy:
        try:
            self._level(top_fd, "", 1)
            self.target.close()
            self.result.tar = self.out.getvalue()
        except OSError as exc:  # a file shorter than it said: keep the members written whole
            self.result.skipped.append(f"(rest of the workspace): unreadable: {exc}")
            self.result.tar = self.out.getvalue()[: self.good] + bytes(2 * tarfile.BLOCKSIZE)
        return self.result

    def _level(self, dir_fd: int, prefix: str, depth: int) -> None:
        try:
            with os.scandir(dir_fd) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            self._refused(prefix.rstrip("/") or ".", "could not be listed", exc)
            return
        for entry in entries:
            if depth == 1 and entry.name == self.leave_out:
                continue
            name = prefix + entry.name
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:  # gone: nothing to copy
                continue
            why = self._problem(name, info, depth)
            if why:
                self._skip(name, why)
            elif stat.S_ISDIR(info.st_mode):
                self._directory(dir_fd, entry.name, name, info, depth)
            else:
                self._file(dir_fd, entry.name, name)

    def _problem(self, name: str, info: os.stat_result, depth: int) -> str | None:
        try:
            name.encode()
        except UnicodeEncodeError:
            return "name is not valid UTF-8"
        why = path_problem(name)
        if why is None and not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
            why = "not a regular file or directory"
        if why is None and depth > MAX_DEPTH:
            why = _TOO_DEEP
        if why is None and stat.S_ISREG(info.st_mode) and self.result.file_bytes + info.st_size > self.max_bytes:
            why = f"{info.st_size} bytes would exceed the result limit of {self.max_bytes} bytes"
        return why

    def _directory(self, dir_fd: int, entry_name: str, name: str, info: os.stat_result, depth: int) -> None:
        try:
            sub = os.open(entry_name, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            self._refused(name, "could not be opened", exc)
            return
        try:
            self._add(_clean_info(name, tarfile.DIRTYPE, info, 0))
            self._level(sub, name + "/", depth + 1)
        finally:
            os.close(sub)

    def _file(self, dir_fd: int, entry_name: str, name: str) -> None:
        try:
            fd = os.open(entry_name, _FILE_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            self._refused(name, "could not be opened", exc)
            return
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):  # swapped since the listing
                self._skip(name, "not a regular file or directory")
                return
            if self.result.file_bytes + info.st_size > self.max_bytes:  # grew since the listing
                self._skip(name, f"{info.st_size} bytes would exceed the result limit of {self.max_bytes} bytes")
                return
            self._add(_clean_info(name, tarfile.REGTYPE, info, info.st_size), handle)
        self.result.files += 1
        self.result.file_bytes += info.st_size

    def _add(self, info: tarfile.TarInfo, handle: io.BufferedReader | None = None) -> None:
        self.target.addfile(info, handle)
        self.good = self.out.tell()

    def _refused(self, name: str, what: str, exc: OSError) -> None:
        if self.denied_is_error and isinstance(exc, PermissionError):
            raise AccessDenied(f"{name!r} {what}: {exc.strerror}")
        self._skip(name, f"{what}: {exc.strerror}")

    def _skip(self, name: str, why: str) -> None:
        self.result.skipped.append(f"{name!r}: {why}")


def _clean_info(name: str, kind: bytes, info: os.stat_result, size: int) -> tarfile.TarInfo:
    clean = tarfile.TarInfo(name)
    clean.type, clean.size, clean.mtime = kind, size, int(info.st_mtime)
    clean.mode = 0o755 if kind == tarfile.DIRTYPE or info.st_mode & 0o111 else 0o644
    return clean
