"""Safe reading of task zips from strangers.

A task zip is checked entry by entry before any byte of it is used
(`inspect_zip`), then turned into a tar for Docker's `put_archive`
(`zip_to_tar`) — nothing is ever extracted on the host for the Docker
runtime. The process runtime extracts with `extract_to_dir`, which refuses to
follow links.

Rules (each failure is a `WorkspaceError` naming the entry and the rule):
- names are valid UTF-8 relative paths without control characters, `..`,
  `.` or empty components, backslashes or drive letters; no duplicates, and
  no file also used as a directory;
- only regular files and directories (no symlinks, devices, fifos, sockets;
  zip has no hard-link type, so an unknown type bit is refused too);
- no encryption, only stored/deflate/bzip2/lzma compression;
- at most `max_files` entries, at most `max_unpacked_bytes` in total (declared
  sizes, and actual bytes while reading, in case a header lies), and no entry
  over 1 MiB packed tighter than `max_compression_ratio` (small entries are
  bounded by the total cap alone, so small runs of zeros stay legal);
- the top-level `.hivemind/` name is reserved for the worker.

Entry point (when the task names no command): `main.py`, `app.py`, `run.py`,
`start.py` at the root, in that order; else the first root-level `*.py` in
sorted (code point) order; else `run.sh`, run with bash where the image has it
and with sh otherwise (decided inside the container, since images differ).
"""

from __future__ import annotations

import io
import os
import re
import stat
import tarfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from packaging.requirements import InvalidRequirement, Requirement

from hivemind_celery.core.errors import HivemindError
from hivemind_celery.core.settings import Settings

TASK_UID = 1000
TASK_GID = 1000
RESERVED_DIR = ".hivemind"
PYTHON_ENTRY_NAMES = ("main.py", "app.py", "run.py", "start.py")
SHELL_ENTRY = "run.sh"
REQUIREMENTS = "requirements.txt"
# The set-up step. `-I`: neither the workspace (the current directory) nor a
# user site is on sys.path, so a task's own `pip/` or `usercustomize.py` never
# runs; `--isolated`: no pip configuration from the task's files or variables.
# The runtime appends the operator's options: index, target directory (put on
# the main step's PYTHONPATH), binary-only, CA bundle, proxy (runtime/setup_step.py).
SETUP_COMMAND = [
    "python3",
    "-I",
    "-m",
    "pip",
    "install",
    "--isolated",
    "--no-cache-dir",
    "--disable-pip-version-check",
    "--no-input",
    "-r",
    REQUIREMENTS,
]
RATIO_CHECK_MIN_BYTES = 1024 * 1024
MAX_REQUIREMENTS_BYTES = 64 * 1024
_CHUNK = 1024 * 1024
_SUPPORTED_COMPRESSION = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_UTF8_FLAG = 0x800
_ENCRYPTED_FLAG = 0x1


class WorkspaceError(HivemindError, ValueError):
    """A task zip (or requirements.txt) that breaks a rule; the message says which."""


@dataclass(frozen=True)
class ZipLimits:
    max_files: int = 10_000
    max_unpacked_bytes: int = 1024 * 1024 * 1024
    max_compression_ratio: float = 200.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ZipLimits:
        return cls(settings.max_files, settings.max_unpacked_bytes, settings.max_compression_ratio)


@dataclass(frozen=True)
class ZipEntry:
    name: str  # validated relative path, no trailing slash
    is_dir: bool
    size: int  # declared uncompressed size
    executable: bool
    mtime: float
    info: zipfile.ZipInfo = field(repr=False, compare=False)


@dataclass(frozen=True)
class ZipManifest:
    entries: tuple[ZipEntry, ...]
    total_bytes: int
    requirements: tuple[str, ...] = ()  # validated requirement lines, if requirements.txt exists

    @property
    def root_files(self) -> list[str]:
        return sorted(e.name for e in self.entries if not e.is_dir and "/" not in e.name)

    @property
    def dirs(self) -> list[str]:
        """Every directory the workspace needs, declared or implied, parents first."""
        names = {e.name for e in self.entries if e.is_dir}
        for entry in self.entries:
            parts = entry.name.split("/")[:-1]
            names.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return sorted(names, key=lambda n: (n.count("/"), n))


def tar_entry(member: tarfile.TarInfo) -> tuple[str, str | None]:
    """A tar member's workspace path, and why it cannot be one (None: it can). An
    empty path is the archive's own root, which callers pass over."""
    name = member.name.removeprefix("./").rstrip("/")
    if not name or name == ".":
        return "", None
    why = path_problem(name)
    if why is None and not (member.isfile() or member.isdir()):
        why = "not a regular file or directory"
    return name, why


_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def zip_time(mtime: float) -> tuple[int, int, int, int, int, int]:
    """A file time as a zip entry can hold it (zip cannot store times before 1980)."""
    return max(time.gmtime(max(mtime, 0))[:6], _ZIP_EPOCH)


def path_problem(name: str) -> str | None:
    """Why `name` cannot be a workspace path, or None when it can."""
    if not name:
        return "empty name"
    if _CONTROL.search(name):
        return "name contains control characters"
    if name.startswith("/"):
        return "absolute path"
    if "\\" in name:
        return "backslash in name (Windows path)"
    if _DRIVE.match(name):
        return "drive letter in name"
    parts = name.split("/")
    if ".." in parts:
        return "path escapes the workspace"
    if any(part in ("", ".") for part in parts):
        return "empty or '.' path component"
    if any(len(part.encode()) > 255 for part in parts) or len(name.encode()) > 4096:
        return "name too long"
    return None


def _decoded_name(info: zipfile.ZipInfo) -> str:
    # Without the UTF-8 flag zipfile decoded the name as cp437; many zip tools
    # write UTF-8 without setting the flag, so take the raw bytes back.
    if info.flag_bits & _UTF8_FLAG:
        return info.orig_filename
    raw = info.orig_filename.encode("cp437")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise WorkspaceError(f"entry {info.orig_filename!r}: name is not valid UTF-8") from None


def _entry_type(info: zipfile.ZipInfo, label: str) -> bool:
    """True for a directory, False for a regular file; refuses anything else."""
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    is_dir = info.orig_filename.endswith("/")
    if info.create_system != 3 or kind == 0:  # no Unix type recorded
        return is_dir
    if stat.S_ISLNK(mode):
        raise WorkspaceError(f"entry {label}: symbolic links are not allowed")
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        raise WorkspaceError(f"entry {label}: device files are not allowed")
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        raise WorkspaceError(f"entry {label}: fifos and sockets are not allowed")
    if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
        if stat.S_ISDIR(mode) != is_dir:
            raise WorkspaceError(f"entry {label}: file type and name disagree (directory or not)")
        return is_dir
    raise WorkspaceError(f"entry {label}: unsupported file type {oct(kind)} (only files and directories)")


def _count_central_entries(data: bytes) -> int:
    """Central-directory records before the end record; read before zipfile
    builds an object per entry, so a zip of millions of tiny entries is refused
    cheaply. Counts signatures, so it can only over-count."""
    end = data.rfind(b"PK\x05\x06", max(0, len(data) - 65_557))
    if end < 0:
        raise WorkspaceError("not a zip file (no end-of-archive record; truncated or another format)")
    return data.count(b"PK\x01\x02", 0, end)


def _check_entry(info: zipfile.ZipInfo, limits: ZipLimits) -> ZipEntry:
    name = _decoded_name(info)
    label = repr(name)
    is_dir = _entry_type(info, label)
    clean = name.rstrip("/") if is_dir else name
    problem = path_problem(clean)
    if problem:
        raise WorkspaceError(f"entry {label}: {problem}")
    if clean == RESERVED_DIR or clean.startswith(RESERVED_DIR + "/"):
        raise WorkspaceError(f"entry {label}: the {RESERVED_DIR}/ directory is reserved for the worker")
    if info.flag_bits & _ENCRYPTED_FLAG:
        raise WorkspaceError(f"entry {label}: encrypted entries are not supported")
    if info.compress_type not in _SUPPORTED_COMPRESSION:
        raise WorkspaceError(f"entry {label}: unsupported compression method {info.compress_type}")
    if is_dir and info.file_size:
        raise WorkspaceError(f"entry {label}: a directory entry holds data")
    if info.file_size >= RATIO_CHECK_MIN_BYTES:
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > limits.max_compression_ratio:
            raise WorkspaceError(
                f"entry {label}: compression ratio {ratio:.0f}:1 is above the limit "
                f"{limits.max_compression_ratio:.0f}:1 (zip bomb?)"
            )
    mode = info.external_attr >> 16
    try:
        mtime = time.mktime(info.date_time + (0, 0, -1))
    except (OverflowError, ValueError):
        mtime = 0.0
    return ZipEntry(clean, is_dir, info.file_size, bool(mode & 0o111), max(mtime, 0.0), info)


def inspect_zip(data: bytes, limits: ZipLimits | None = None) -> ZipManifest:
    """Validate a task zip without extracting it. Raises WorkspaceError."""
    limits = limits or ZipLimits()
    if not data:
        raise WorkspaceError("the task zip is empty (0 bytes)")
    if _count_central_entries(data) > limits.max_files:
        raise WorkspaceError(f"the zip holds more than {limits.max_files} entries")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise WorkspaceError(f"not a readable zip file (truncated or corrupt?): {exc}") from None
    except (OSError, ValueError, EOFError) as exc:
        raise WorkspaceError(f"not a readable zip file: {exc}") from None
    infos = archive.infolist()
    if not infos:
        raise WorkspaceError("the zip holds no files")
    if len(infos) > limits.max_files:
        raise WorkspaceError(f"the zip holds {len(infos)} entries, more than the limit {limits.max_files}")
    entries: dict[str, ZipEntry] = {}
    total = 0
    for info in infos:
        entry = _check_entry(info, limits)
        if entry.name in entries:
            raise WorkspaceError(f"entry {entry.name!r}: duplicate name")
        entries[entry.name] = entry
        total += entry.size
        if total > limits.max_unpacked_bytes:
            raise WorkspaceError(
                f"entry {entry.name!r}: the zip unpacks to more than the limit of {limits.max_unpacked_bytes} bytes"
            )
    for entry in entries.values():
        parent = entry.name.rpartition("/")[0]
        while parent:
            if parent in entries and not entries[parent].is_dir:
                raise WorkspaceError(f"entry {entry.name!r}: its parent {parent!r} is a file")
            parent = parent.rpartition("/")[0]
    manifest = ZipManifest(tuple(entries.values()), total)
    req = entries.get(REQUIREMENTS)
    if req is not None and not req.is_dir:
        text = _read_requirements(data, req)
        manifest = ZipManifest(manifest.entries, total, tuple(check_requirements(text)))
    return manifest


def _read_requirements(data: bytes, entry: ZipEntry) -> str:
    if entry.size > MAX_REQUIREMENTS_BYTES:
        raise WorkspaceError(f"entry {REQUIREMENTS!r}: larger than {MAX_REQUIREMENTS_BYTES} bytes")
    raw = b"".join(_read_entry(data, entry))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise WorkspaceError(f"entry {REQUIREMENTS!r}: not valid UTF-8 text") from None


def check_requirements(text: str) -> list[str]:
    """Plain `name[extras] specifiers ; markers` lines only: no options (-e,
    -r, -i, --index-url, -f ...), no paths, no URLs or `@` references, no
    line continuations or variables. Returns the requirement lines."""
    found: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        body = re.split(r"(^|\s)#", line, maxsplit=1)[0].strip()
        if not body:
            continue
        where = f"{REQUIREMENTS} line {number} ({body[:80]!r})"
        if body.startswith("-"):
            raise WorkspaceError(f"{where}: pip options are not allowed, only package names")
        if body.endswith("\\") or "$" in body:
            raise WorkspaceError(f"{where}: line continuations and variables are not allowed")
        if "/" in body.split(";")[0] or "\\" in body or body.startswith("."):
            raise WorkspaceError(f"{where}: local paths and URLs are not allowed")
        try:
            requirement = Requirement(body)
        except InvalidRequirement as exc:
            raise WorkspaceError(f"{where}: not a valid requirement: {exc}") from None
        if requirement.url:
            raise WorkspaceError(f"{where}: direct URL references are not allowed")
        found.append(body)
    return found


class _Counted(io.RawIOBase):
    """Reads one zip entry, refusing more bytes than its header declared."""

    def __init__(self, stream: IO[bytes], entry: ZipEntry) -> None:
        self._stream, self._entry, self._seen = stream, entry, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        try:
            chunk = self._stream.read(len(buffer))
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise WorkspaceError(f"entry {self._entry.name!r}: corrupt data: {exc}") from None
        self._seen += len(chunk)
        if self._seen > self._entry.size:
            raise WorkspaceError(f"entry {self._entry.name!r}: holds more data than its header declares")
        buffer[: len(chunk)] = chunk
        return len(chunk)


def _open_entry(archive: zipfile.ZipFile, entry: ZipEntry) -> _Counted:
    try:
        return _Counted(archive.open(entry.info), entry)
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError) as exc:
        raise WorkspaceError(f"entry {entry.name!r}: cannot be read: {exc}") from None


def _read_entry(data: bytes, entry: ZipEntry) -> Iterator[bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        stream = _open_entry(archive, entry)
        while chunk := stream.read(_CHUNK):
            yield chunk
        _check_complete(stream, entry)


def _check_complete(stream: _Counted, entry: ZipEntry) -> None:
    if stream._seen != entry.size:
        raise WorkspaceError(f"entry {entry.name!r}: holds less data than its header declares")


def _file_mode(entry: ZipEntry) -> int:
    return 0o755 if entry.executable else 0o644  # never setuid/setgid/sticky


def zip_to_tar(data: bytes, manifest: ZipManifest, extra: Sequence[tuple[str, bytes | None, ZipManifest | None]] = ()) -> bytes:
    """The workspace as a tar for put_archive into /workspace: owned by the
    task user, plain modes, directories (declared or implied) first. Each
    `extra` (directory, zip, its manifest) adds that directory, and the checked
    zip's entries under it (a restored checkpoint; the zip may be None)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_tar_info(".", tarfile.DIRTYPE, 0o755, 0, time.time()))
        _add_zip(tar, data, manifest, "")
        for directory, extra_data, extra_manifest in extra:
            parts = directory.split("/")
            for depth in range(1, len(parts) + 1):
                tar.addfile(_tar_info("/".join(parts[:depth]), tarfile.DIRTYPE, 0o755, 0, time.time()))
            if extra_data is not None and extra_manifest is not None:
                _add_zip(tar, extra_data, extra_manifest, directory + "/")
    return out.getvalue()


def _add_zip(tar: tarfile.TarFile, data: bytes, manifest: ZipManifest, prefix: str) -> None:
    mtimes = {e.name: e.mtime for e in manifest.entries}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in manifest.dirs:
            tar.addfile(_tar_info(prefix + name, tarfile.DIRTYPE, 0o755, 0, mtimes.get(name, time.time())))
        for entry in manifest.entries:
            if entry.is_dir:
                continue
            info = _tar_info(prefix + entry.name, tarfile.REGTYPE, _file_mode(entry), entry.size, entry.mtime)
            stream = _open_entry(archive, entry)
            try:
                tar.addfile(info, io.BufferedReader(stream, _CHUNK))
            except OSError as exc:  # tarfile: "unexpected end of data"
                raise WorkspaceError(f"entry {entry.name!r}: holds less data than its header declares") from exc
            _check_complete(stream, entry)


def _tar_info(name: str, kind: bytes, mode: int, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.mtime = kind, mode, size, mtime
    info.uid, info.gid, info.uname, info.gname = TASK_UID, TASK_GID, "task", "task"
    return info


def extract_to_dir(data: bytes, manifest: ZipManifest, dest: Path) -> None:
    """Extract for the process runtime. dest must be an empty directory; files
    are created with O_EXCL|O_NOFOLLOW and every parent is checked to resolve
    inside dest, so nothing is written through a link."""
    root = dest.resolve(strict=True)
    if any(root.iterdir()):
        raise WorkspaceError(f"workspace directory {root} is not empty")
    for name in manifest.dirs:
        target = root / name
        if target.parent.resolve(strict=True) != target.parent or not target.parent.is_relative_to(root):
            raise WorkspaceError(f"entry {name!r}: parent resolves outside the workspace")
        os.mkdir(target, 0o755)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for entry in manifest.entries:
            if entry.is_dir:
                continue
            target = root / entry.name
            if target.parent.resolve(strict=True) != target.parent or not target.parent.is_relative_to(root):
                raise WorkspaceError(f"entry {entry.name!r}: parent resolves outside the workspace")
            stream = _open_entry(archive, entry)
            with os.fdopen(os.open(target, flags, _file_mode(entry)), "wb") as handle:
                while chunk := stream.read(_CHUNK):
                    handle.write(chunk)
            _check_complete(stream, entry)


def entry_command(manifest: ZipManifest) -> list[str]:
    """argv of the main step when the task names no command (see module doc)."""
    root = manifest.root_files
    for name in PYTHON_ENTRY_NAMES:
        if name in root:
            return ["python3", "-u", name]
    python_files = [name for name in root if name.endswith(".py")]
    if python_files:
        return ["python3", "-u", python_files[0]]
    if SHELL_ENTRY in root:
        # bash where the image has it (most scripts assume it), sh otherwise.
        return ["sh", "-c", f"if command -v bash >/dev/null 2>&1; then exec bash {SHELL_ENTRY}; else exec sh {SHELL_ENTRY}; fi"]
    raise WorkspaceError(
        "no entry point: the zip has none of main.py, app.py, run.py, start.py, another "
        "root-level .py file or run.sh, and the task names no command"
    )


def setup_command(manifest: ZipManifest) -> list[str] | None:
    """The requirements set-up step, or None when there is nothing to install."""
    return list(SETUP_COMMAND) if manifest.requirements else None
