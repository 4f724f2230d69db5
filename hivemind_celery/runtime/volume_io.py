"""Copying a task's files into and out of its volumes through their
directories on the host, when the worker can see them.

Docker's archive API costs about 60 ms a call on this project's hosts
(dockerd mounts the container's filesystem and re-executes itself to pack or
unpack in a chroot), twice per task: more than everything else the worker
adds to a short task. A worker that sees Docker's volumes directory (on the
host, or in a container with it mounted, as the compose file does) reads and
writes a volume's directory itself, and falls back to the API otherwise:

- in: the job's tar (made by the worker from a checked zip: regular files and
  directories only) is unpacked into the fresh, empty volume before the task
  ever ran, owned by the task user as `put_archive` would leave it. Needs root
  (the files are chowned) and write access to the directory.
- out: after the task's container has ended, `archive.copy_dir` reads the
  directory without following links (the task wrote it). Needs only read
  access (root, or CAP_DAC_READ_SEARCH).

HIVEMIND_VOLUME_IO=api turns this off.
"""

from __future__ import annotations

import io
import os
import tarfile

from hivemind_celery.core.settings import Settings


def host_dir(volume, settings: Settings, write: bool = False) -> str | None:  # type: ignore[no-untyped-def]
    """The volume's directory when the worker may use it directly, else None."""
    if settings.volume_io != "auto":
        return None
    path = (volume.attrs or {}).get("Mountpoint")
    if not path or not os.path.isdir(path):
        return None
    if write and not (os.geteuid() == 0 and os.access(path, os.W_OK)):
        return None
    return path


def unpack(workspace_tar: bytes, dest: str) -> None:
    """Unpack the worker's own tar into an empty volume directory, keeping the
    owner and modes it names (tarfile chowns when run as root). A directory
    that is not empty (a volume some earlier run left, holding whatever that
    task made) is refused: the caller copies through the API instead."""
    if os.listdir(dest):
        raise FileExistsError(f"volume directory {dest} is not empty")
    with tarfile.open(fileobj=io.BytesIO(workspace_tar)) as archive:
        archive.extractall(dest, filter=_files_and_directories)


def _files_and_directories(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    # The tar is ours, but a stranger chose its names: no links, no devices,
    # nothing outside dest (tar_filter checks paths and strips setuid bits).
    if not (member.isfile() or member.isdir()):
        raise tarfile.SpecialFileError(member)
    return tarfile.tar_filter(member, dest)
