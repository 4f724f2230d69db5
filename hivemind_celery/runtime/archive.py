"""Copying a finished task's workspace out, bounded.

Both runtimes hand their workspace over as a stream of tar bytes (Docker's
`get_archive`, or a tar of the process runtime's directory). `bounded_copy`
reads that stream once and writes a new tar that holds only regular files and
directories with safe names, relative to the workspace, up to `max_bytes` of
file content. Files that do not fit are skipped whole (a later small file can
still come back) and noted. Reading stops after READ_FACTOR x max_bytes of raw
stream, so a task that fills its disk cannot keep the worker reading forever.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from hivemind_celery.workspace import path_problem

READ_FACTOR = 8


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


def bounded_copy(chunks: Iterable[bytes], max_bytes: int, top: str | None = "workspace") -> WorkspaceCopy:
    """Filter a workspace tar stream; `top` is the directory the stream's names
    start with (Docker puts the copied directory's own name first)."""
    reader = _ChunkReader(chunks, READ_FACTOR * max_bytes + 1024 * 1024)
    out = io.BytesIO()
    copy = WorkspaceCopy(b"")
    target = tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT)
    good = 0  # end of the last member written whole
    try:
        with tarfile.open(fileobj=io.BufferedReader(reader), mode="r|*") as source:
            for member in source:
                name = _relative(member.name, top)
                if name is None:
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
    if why is None and not (member.isfile() or member.isdir()):
        why = "not a regular file or directory"
    if why is None and member.isfile() and kept + member.size > max_bytes:
        why = f"{member.size} bytes would exceed the result limit of {max_bytes} bytes"
    return why
