"""A task's checkpoints: packed, stored where every worker of the site reads
them, and checked before they go back into a fresh workspace.

The task writes its state under `$HIVEMIND_CHECKPOINT_DIR`
(`/workspace/.hivemind/checkpoint`, a name task zips may not use). The worker
copies that directory (runtime: without following links, regular files and
directories only) and packs it here into a zip:

- `pack` refuses the whole checkpoint when anything was left out of the copy
  (a link, a device, a fifo, a bad name) or its files pass the size cap: a
  partial checkpoint would be a corrupt one. The previous checkpoint stays.
- `CheckpointStore.save` stores the zip in Redis under the task and its
  sha256, then swaps the task's pointer to it and drops the one before, in one
  transaction: the pointer only ever names a checkpoint stored whole.
- `CheckpointStore.load` refuses a checkpoint whose bytes no longer hash to
  the pointer's digest (changed in storage), and `restorable` runs the task
  zip rules on it (workspace.inspect_zip: no `..`, no links or devices, size
  and count caps) before `zip_to_tar` puts it under the checkpoint directory.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
import zipfile
from dataclasses import asdict, dataclass
from typing import cast

import redis

from hivemind_celery.core import keys
from hivemind_celery.core.errors import HivemindError
from hivemind_celery.core.settings import Settings
from hivemind_celery.core.units import as_text
from hivemind_celery.payloads.store import REF_PREFIX, digest_of
from hivemind_celery.payloads.workspace import (
    RESERVED_DIR,
    WorkspaceError,
    ZipLimits,
    ZipManifest,
    inspect_zip,
    tar_entry,
    zip_time,
)

CHECKPOINT_DIR = f"{RESERVED_DIR}/checkpoint"  # relative to the workspace
PROGRESS_FILE = "progress"  # in the checkpoint directory: a fraction 0..1
_PROGRESS_MAX_BYTES = 64


class CheckpointRefused(HivemindError, ValueError):
    """A checkpoint that is not saved or not restored; the message says why."""


@dataclass(frozen=True)
class CheckpointPointer:
    """What the task's pointer key holds: its latest checkpoint stored whole."""

    ref: str  # sha256:<hex> of the zip
    size: int  # bytes of the zip
    saved_at: float  # unix seconds
    progress: float | None
    attempt: int
    worker: str

    @property
    def digest(self) -> str:
        return self.ref.removeprefix(REF_PREFIX)


def pack(tar: bytes, skipped: list[str], max_bytes: int) -> bytes | None:
    """The copied checkpoint directory (a tar from runtime.archive) as a zip;
    None when it holds no file. Raises CheckpointRefused (see module doc)."""
    if skipped:
        skipped = [why.replace("the result limit", "the checkpoint limit") for why in skipped]
        more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
        raise CheckpointRefused(f"checkpoint not saved: {skipped[0]}{more}")
    out = io.BytesIO()
    files = total = 0
    with (
        tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_STORED, allowZip64=True) as archive,
    ):
        for member in source:
            name, why = tar_entry(member)
            if not name:
                continue
            if why:
                raise CheckpointRefused(f"checkpoint not saved: {name!r}: {why}")
            total += member.size if member.isfile() else 0
            if total > max_bytes:
                raise CheckpointRefused(
                    f"checkpoint not saved: its files pass the limit of {max_bytes} bytes (HIVEMIND_CHECKPOINT_MAX_BYTES)"
                )
            info = zipfile.ZipInfo(name + "/" if member.isdir() else name, zip_time(member.mtime))
            info.external_attr = ((0o040000 | 0o755) if member.isdir() else (0o100000 | 0o644)) << 16
            body = source.extractfile(member) if member.isfile() else None
            archive.writestr(info, body.read() if body is not None else b"")
            files += member.isfile()
    return out.getvalue() if files else None


def progress_of(data: bytes) -> float | None:
    """The fraction in the checkpoint zip's `progress` file, or None (missing or not 0..1)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            info = archive.getinfo(PROGRESS_FILE)
            if info.file_size > _PROGRESS_MAX_BYTES:
                return None
            value = float(archive.read(info).decode().strip())
    except (KeyError, ValueError, UnicodeDecodeError, zipfile.BadZipFile):
        return None
    return value if 0.0 <= value <= 1.0 else None


def restorable(data: bytes, settings: Settings) -> ZipManifest:
    """The checked manifest of a stored checkpoint; CheckpointRefused names the broken rule."""
    limits = ZipLimits(settings.max_files, settings.checkpoint_max_bytes, settings.max_compression_ratio)
    try:
        return inspect_zip(data, limits)
    except WorkspaceError as exc:
        raise CheckpointRefused(f"checkpoint refused: {exc}") from None


class CheckpointStore:
    """Each task's checkpoints in Redis: blobs by task and digest, one pointer."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._redis = client
        self.ttl = settings.payload_ttl
        self.max_bytes = settings.checkpoint_max_bytes

    def latest(self, task_id: str) -> CheckpointPointer | None:
        raw = self._redis.get(keys.task_checkpoint(task_id))
        if raw is None:
            return None
        try:
            return CheckpointPointer(**json.loads(as_text(raw)))
        except (TypeError, ValueError):
            return None

    def save(self, task_id: str, data: bytes, attempt: int, worker: str) -> CheckpointPointer:
        """Store `data`, then point the task at it; the checkpoint before goes."""
        # A zip holds some bytes of headers per file besides the capped contents.
        if len(data) > self.max_bytes + 1024 * 1024:
            raise CheckpointRefused(f"checkpoint not saved: {len(data)} bytes, above the limit")
        digest = digest_of(data)
        previous = self.latest(task_id)
        pointer = CheckpointPointer(REF_PREFIX + digest, len(data), time.time(), progress_of(data), attempt, worker)
        self._redis.set(keys.task_checkpoint_blob(task_id, digest), data, ex=self.ttl)
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(keys.task_checkpoint(task_id), json.dumps(asdict(pointer)), ex=self.ttl)
        if previous is not None and previous.digest != digest:
            pipe.delete(keys.task_checkpoint_blob(task_id, previous.digest))
        pipe.execute()
        return pointer

    def load(self, task_id: str) -> tuple[CheckpointPointer, bytes] | None:
        """The latest checkpoint and its bytes, None when there is none;
        CheckpointRefused when it is gone or changed in storage."""
        pointer = self.latest(task_id)
        if pointer is None:
            return None
        data = self._redis.get(keys.task_checkpoint_blob(task_id, pointer.digest))
        if data is None:
            raise CheckpointRefused(f"checkpoint {pointer.ref} is no longer stored (expired?)")
        data = cast(bytes, data)
        actual = digest_of(data)
        if actual != pointer.digest:
            raise CheckpointRefused(
                f"checkpoint refused: its bytes hash to sha256:{actual}, not {pointer.ref} (changed in storage)"
            )
        return pointer, data

    def clear(self, task_id: str, *also: str) -> None:
        """Forget the task's checkpoint (the task has ended for good), and the
        keys `also` named, in the same round trip."""
        pointer = self.latest(task_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(keys.task_checkpoint(task_id), *also)
        if pointer is not None:
            pipe.delete(keys.task_checkpoint_blob(task_id, pointer.digest))
        pipe.execute()
