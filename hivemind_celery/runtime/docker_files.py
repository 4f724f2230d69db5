"""Files into and out of a task's Docker volumes: the workspace and the set-up
step's directories in before a container starts, the workspace and the
checkpoint directory out (bounded) while it runs or after it ended.

Through the volume's directory on the host when the worker can see it (one
unpack, one walk), else through Docker's archive API (see volume_io).
"""

from __future__ import annotations

import io
import logging
import tarfile
from pathlib import Path
from typing import Any

import requests
from docker.errors import APIError, NotFound

from hivemind_celery.core.settings import Settings
from hivemind_celery.payloads.checkpoint import CHECKPOINT_DIR
from hivemind_celery.payloads.workspace import RESERVED_DIR, TASK_GID, TASK_UID
from hivemind_celery.runtime import volume_io
from hivemind_celery.runtime.archive import AccessDenied, WorkspaceCopy, bounded_copy, copy_dir
from hivemind_celery.runtime.docker_config import LABEL_TASK, WORKSPACE

log = logging.getLogger(__name__)


def deps_tar(ca_bundle: bytes | None) -> bytes:
    """Directories the set-up step writes (owned by the task user) and the CA bundle."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name in ("deps", "tmp", "home", "proxy"):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, 0o755, TASK_UID, TASK_GID
            tar.addfile(info)
        if ca_bundle is not None:
            info = tarfile.TarInfo("ca-certificates.crt")
            info.size, info.mode = len(ca_bundle), 0o644
            tar.addfile(info, io.BytesIO(ca_bundle))
    return out.getvalue()


def read_ca(path: str) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except OSError:
        log.warning("CA bundle %s not readable; the set-up step uses the image's own CAs", path)
        return None


def put(container: Any, mount: str, volume: Any, tar: bytes, settings: Settings) -> None:
    """Copy `tar` into the volume mounted at `mount` of a container not yet started."""
    if not write_in_place(volume, tar, settings, container.labels.get(LABEL_TASK, "")):
        container.put_archive(mount, tar)


def write_in_place(volume: Any, tar: bytes, settings: Settings, task_id: str) -> bool:
    """Unpack `tar` into a fresh volume through its host directory; False
    when the Docker API has to copy it instead (see volume_io)."""
    path = volume_io.host_dir(volume, settings, write=True)
    if path is None:
        return False
    try:
        volume_io.unpack(tar, path)
        return True
    except (OSError, tarfile.TarError) as exc:  # the API overwrites whatever got written
        log.warning("could not write the volume directly, using the Docker API: %s", exc, extra={"task_id": task_id})
        return False


def read_checkpoint(container: Any, workspace: Any, task_id: str, settings: Settings) -> WorkspaceCopy | None:
    """The task's checkpoint directory as it stands, running or ended (payloads/checkpoint.py)."""
    cap = settings.checkpoint_max_bytes
    path = volume_io.host_dir(workspace, settings)
    if path is not None:
        try:
            return copy_dir(Path(path) / CHECKPOINT_DIR, cap, denied_is_error=True)
        except FileNotFoundError:
            return None  # the task removed it
        except (OSError, AccessDenied) as exc:
            log.info("checkpoint not readable in place, copying it through the Docker API: %s", exc, extra={"task_id": task_id})
    try:
        chunks, _ = container.get_archive(f"{WORKSPACE}/{CHECKPOINT_DIR}", chunk_size=1024 * 1024)
        return bounded_copy(chunks, cap, top=Path(CHECKPOINT_DIR).name)
    except (NotFound, APIError, requests.RequestException) as exc:
        log.info("could not copy the checkpoint out: %s", exc, extra={"task_id": task_id})
        return None


def copy_out(container: Any, workspace: Any, task_id: str, settings: Settings) -> WorkspaceCopy | None:
    """The whole workspace, bounded by HIVEMIND_RESULT_MAX_BYTES, without the reserved directory."""
    path = volume_io.host_dir(workspace, settings) if workspace is not None else None
    if path is not None:
        try:
            return copy_dir(path, settings.result_max_bytes, denied_is_error=True, leave_out=RESERVED_DIR)
        except (OSError, AccessDenied) as exc:  # e.g. a non-root worker and a file of mode 0600
            log.info("workspace not readable in place, copying it through the Docker API: %s", exc, extra={"task_id": task_id})
    try:
        chunks, _ = container.get_archive(WORKSPACE, chunk_size=1024 * 1024)
        return bounded_copy(chunks, settings.result_max_bytes, top=Path(WORKSPACE).name, leave_out=RESERVED_DIR)
    except (NotFound, APIError) as exc:
        log.warning("could not copy the workspace out: %s", exc, extra={"task_id": task_id})
        return None
