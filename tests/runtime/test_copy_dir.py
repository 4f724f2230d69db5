"""Reading a finished workspace in place (`archive.copy_dir`) and writing a
job's files into a volume directory (`volume_io.unpack`): what a stranger's
task could leave behind — links out, fifos, sockets, hard links, deep trees,
odd names, files too big — on a real filesystem, no services."""

from __future__ import annotations

import io
import os
import socket
import stat
import tarfile
import threading
from pathlib import Path

import pytest

from hivemind_celery.core.settings import Settings
from hivemind_celery.payloads.workspace import TASK_UID, inspect_zip, zip_to_tar
from hivemind_celery.runtime import volume_io
from hivemind_celery.runtime.archive import (
    MAX_DEPTH,
    _DirCopier,
    bounded_copy,
    copy_dir,
)
from tests.services_kit import make_zip


def members(tar: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        return {m.name: m for m in archive.getmembers()}


def contents(tar: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        return {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}


def test_files_and_directories_come_back_with_clean_modes(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "result.csv").write_bytes(b"a,b\n")
    tool = tmp_path / "tool.sh"
    tool.write_bytes(b"#!/bin/sh\n")
    tool.chmod(0o4777)  # setuid and world-writable: neither survives
    copy = copy_dir(tmp_path, 1 << 20)
    found = members(copy.tar)
    assert set(found) == {"out", "out/result.csv", "tool.sh"}
    assert found["out"].isdir() and found["out"].mode == 0o755
    assert found["tool.sh"].mode == 0o755 and found["out/result.csv"].mode == 0o644
    assert all(m.uid == 0 and m.uname == "" for m in found.values())
    assert contents(copy.tar)["out/result.csv"] == b"a,b\n"
    assert (copy.files, copy.file_bytes, copy.skipped) == (2, 14, [])


def test_links_fifos_and_sockets_are_left_out_and_nothing_outside_is_read(tmp_path: Path) -> None:
    secret = tmp_path / "host-secret"
    secret.write_bytes(b"not yours")
    work = tmp_path / "work"
    work.mkdir()
    (work / "mine.txt").write_bytes(b"ok")
    os.symlink(secret, work / "abs-link")
    os.symlink("../host-secret", work / "rel-link")
    os.symlink(tmp_path, work / "dir-link")
    os.mkfifo(work / "pipe")  # opening it to read would block forever
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(work / "sock"))
        copy = copy_dir(work, 1 << 20)
    assert contents(copy.tar) == {"mine.txt": b"ok"}
    assert set(members(copy.tar)) == {"mine.txt"}
    for name in ("abs-link", "rel-link", "dir-link", "pipe", "sock"):
        assert f"{name!r}: not a regular file or directory" in copy.skipped


def test_entries_swapped_after_the_listing_are_not_followed(tmp_path: Path) -> None:
    """The tree is read after the task ended, but if an entry changed between
    the listing and the open anyway, the open fails or the fstat check refuses
    it: a directory swapped for a link to the host, a file for a fifo."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "loot").write_bytes(b"host file")
    work = tmp_path / "work"
    (work / "d").mkdir(parents=True)
    (work / "f").write_bytes(b"f")
    listed_dir = os.stat(work / "d")
    os.rmdir(work / "d")
    os.symlink(outside, work / "d")
    os.unlink(work / "f")
    os.mkfifo(work / "f")
    copier = _DirCopier(1 << 20)
    fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
    try:
        copier._directory(fd, "d", "d", listed_dir, 1)
        copier._file(fd, "f", "f")
    finally:
        os.close(fd)
    assert copier.result.skipped[0].startswith("'d': could not be opened")
    assert copier.result.skipped[1] == "'f': not a regular file or directory"
    assert copier.result.files == 0


def test_hard_links_inside_are_plain_files(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"same")
    os.link(tmp_path / "a", tmp_path / "b")
    assert contents(copy_dir(tmp_path, 1 << 20).tar) == {"a": b"same", "b": b"same"}


def test_too_deep_trees_and_bad_names_are_noted(tmp_path: Path) -> None:
    deep = tmp_path
    for level in range(MAX_DEPTH + 5):
        deep = deep / f"d{level}"
    deep.mkdir(parents=True)
    (deep / "bottom.txt").write_bytes(b"x")
    (tmp_path / "back\\slash").write_bytes(b"x")
    os.close(os.open(os.path.join(os.fsencode(tmp_path), b"bad-\xff"), os.O_CREAT | os.O_WRONLY, 0o644))
    copy = copy_dir(tmp_path, 1 << 20)
    names = set(members(copy.tar))
    assert "/".join(f"d{level}" for level in range(MAX_DEPTH)) in names
    assert "/".join(f"d{level}" for level in range(MAX_DEPTH + 1)) not in names
    assert not any(name.endswith("bottom.txt") for name in names)
    assert any(f"nested more than {MAX_DEPTH} levels" in note for note in copy.skipped)
    assert any("backslash" in note for note in copy.skipped)
    assert any("not valid UTF-8" in note for note in copy.skipped)


def test_the_result_cap_skips_big_files_whole_without_reading_them(tmp_path: Path) -> None:
    (tmp_path / "a-big.bin").write_bytes(b"x" * 2000)
    (tmp_path / "b-small.txt").write_bytes(b"y" * 10)
    (tmp_path / "c-locked.bin").write_bytes(b"z" * 5000)
    (tmp_path / "c-locked.bin").chmod(0)  # skipped on size before any open is tried
    copy = copy_dir(tmp_path, 1000)
    assert contents(copy.tar) == {"b-small.txt": b"y" * 10}
    assert "'a-big.bin': 2000 bytes would exceed the result limit of 1000 bytes" in copy.skipped
    assert "'c-locked.bin': 5000 bytes would exceed the result limit of 1000 bytes" in copy.skipped


def test_same_result_as_filtering_the_docker_archive(tmp_path: Path) -> None:
    """copy_dir and bounded_copy (the get_archive path) keep the same members,
    depth limit included."""
    (tmp_path / "out" / "deep").mkdir(parents=True)
    (tmp_path / "out" / "deep" / "r.txt").write_bytes(b"r")
    (tmp_path / "run.sh").write_bytes(b"echo")
    os.symlink("/etc/passwd", tmp_path / "link")
    deep = tmp_path.joinpath(*["n"] * (MAX_DEPTH + 3))
    deep.mkdir(parents=True)
    (deep / "bottom.txt").write_bytes(b"x")
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w") as tar:
        tar.add(tmp_path, arcname="workspace")
    through_api = bounded_copy([stream.getvalue()], 1 << 20)
    in_place = copy_dir(tmp_path, 1 << 20)
    assert contents(in_place.tar) == contents(through_api.tar)
    assert set(members(in_place.tar)) == set(members(through_api.tar))


def test_a_fifo_among_files_does_not_hang_the_copy(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "a-fifo")
    (tmp_path / "b.txt").write_bytes(b"b")
    done: list = []
    worker = threading.Thread(target=lambda: done.append(copy_dir(tmp_path, 1 << 20)), daemon=True)
    worker.start()
    worker.join(10)
    assert done and contents(done[0].tar) == {"b.txt": b"b"}


# --- writing into a volume directory ------------------------------------------------


def test_unpack_writes_the_job_files_owned_by_the_task_user(tmp_path: Path) -> None:
    data = make_zip({"main.py": "print(1)", "pkg/mod.py": "x = 1"})
    dest = tmp_path / "_data"
    dest.mkdir()
    volume_io.unpack(zip_to_tar(data, inspect_zip(data)), str(dest))
    assert (dest / "main.py").read_text() == "print(1)"
    assert (dest / "pkg" / "mod.py").read_text() == "x = 1"
    if os.geteuid() == 0:  # only root can give files away, which is why unpacking needs it
        for path in (dest, dest / "pkg", dest / "pkg" / "mod.py"):
            assert path.stat().st_uid == TASK_UID
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE])
def test_unpack_refuses_anything_but_files_and_directories(tmp_path: Path, kind: bytes) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("thing")
        info.type, info.linkname = kind, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(tarfile.TarError):
        volume_io.unpack(out.getvalue(), str(tmp_path))
    assert not os.path.lexists(tmp_path / "thing")


def test_unpack_refuses_a_directory_that_is_not_empty(tmp_path: Path) -> None:
    """What an earlier run left (here a link planted where a job file goes) is
    never written through: the whole copy is refused, the API does it instead."""
    os.symlink("/etc/hostname", tmp_path / "main.py")
    data = make_zip({"main.py": "print(1)"})
    with pytest.raises(FileExistsError, match="not empty"):
        volume_io.unpack(zip_to_tar(data, inspect_zip(data)), str(tmp_path))
    assert os.readlink(tmp_path / "main.py") == "/etc/hostname"


def test_unpack_refuses_paths_outside(tmp_path: Path) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("../escaped")
        tar.addfile(info, io.BytesIO(b""))
    (tmp_path / "dest").mkdir()
    with pytest.raises(tarfile.TarError):
        volume_io.unpack(out.getvalue(), str(tmp_path / "dest"))
    assert not (tmp_path / "escaped").exists()


class _Volume:
    """Stands in for a docker-SDK Volume: only `attrs` is read."""

    def __init__(self, mountpoint: str | None) -> None:
        self.attrs = {"Mountpoint": mountpoint} if mountpoint else {}


def test_host_dir_only_when_visible_and_allowed(tmp_path: Path) -> None:
    auto, api = Settings(volume_io="auto"), Settings(volume_io="api")
    assert volume_io.host_dir(_Volume(str(tmp_path)), auto) == str(tmp_path)
    assert volume_io.host_dir(_Volume(str(tmp_path)), api) is None
    assert volume_io.host_dir(_Volume(str(tmp_path / "not-here")), auto) is None
    assert volume_io.host_dir(_Volume(None), auto) is None
    writable = volume_io.host_dir(_Volume(str(tmp_path)), auto, write=True)
    assert writable == (str(tmp_path) if os.geteuid() == 0 else None)
