"""Checkpoints from strangers: packed from a real directory (runtime.archive's
copy, no link followed), stored in a real Redis, checked on the way back.
Every refusal names what was wrong; the previous checkpoint stays."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from hivemind_celery.core import keys
from hivemind_celery.core.settings import Settings
from hivemind_celery.payloads import workspace
from hivemind_celery.payloads.checkpoint import (
    CHECKPOINT_DIR,
    CheckpointRefused,
    CheckpointStore,
    pack,
    progress_of,
    restorable,
)
from hivemind_celery.runtime.archive import copy_dir

pytestmark = [pytest.mark.redis]

CAP = 4096


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, checkpoint_max_bytes=CAP)


@pytest.fixture
def store(redis_client, settings) -> CheckpointStore:
    return CheckpointStore(redis_client, settings)


def packed(path: Path, cap: int = CAP) -> bytes | None:
    copy = copy_dir(path, cap)
    return pack(copy.tar, copy.skipped, cap)


def test_a_directory_packs_stores_and_comes_back_into_a_fresh_workspace(tmp_path, store, settings) -> None:
    (tmp_path / "state.json").write_text('{"i": 7}')
    (tmp_path / "progress").write_text("0.35\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "more.bin").write_bytes(b"\x00\x01" * 10)
    data = packed(tmp_path)
    assert data is not None and progress_of(data) == 0.35
    pointer = store.save("t1", data, attempt=1, worker="w1")
    assert pointer.progress == 0.35 and pointer.size == len(data)
    loaded = store.load("t1")
    assert loaded is not None and loaded[1] == data
    manifest = restorable(loaded[1], settings)
    task_zip = io.BytesIO()
    with zipfile.ZipFile(task_zip, "w") as archive:
        archive.writestr("main.py", "print(1)")
    task_manifest = workspace.inspect_zip(task_zip.getvalue())
    tar = workspace.zip_to_tar(task_zip.getvalue(), task_manifest, extra=[(CHECKPOINT_DIR, data, manifest)])
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        members = {m.name: m for m in archive.getmembers()}
        assert archive.extractfile(members[f"{CHECKPOINT_DIR}/state.json"]).read() == b'{"i": 7}'  # type: ignore[union-attr]
        assert archive.extractfile(members[f"{CHECKPOINT_DIR}/sub/more.bin"]).read() == b"\x00\x01" * 10  # type: ignore[union-attr]
    # the directory exists for the task and belongs to its user
    assert members[CHECKPOINT_DIR].isdir() and members[CHECKPOINT_DIR].uid == workspace.TASK_UID
    assert members[".hivemind"].isdir() and "main.py" in members


def test_an_empty_directory_is_no_checkpoint_and_the_task_gets_an_empty_one(tmp_path) -> None:
    assert packed(tmp_path) is None
    task_zip = io.BytesIO()
    with zipfile.ZipFile(task_zip, "w") as archive:
        archive.writestr("main.py", "print(1)")
    tar = workspace.zip_to_tar(
        task_zip.getvalue(), workspace.inspect_zip(task_zip.getvalue()), extra=[(CHECKPOINT_DIR, None, None)]
    )
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        names = archive.getnames()
    assert CHECKPOINT_DIR in names and not [n for n in names if n.startswith(CHECKPOINT_DIR + "/")]


def test_the_pointer_moves_only_to_a_whole_checkpoint_and_the_old_one_goes(tmp_path, store, redis_client) -> None:
    (tmp_path / "state").write_text("1")
    first = store.save("t2", packed(tmp_path) or b"", 1, "w")
    (tmp_path / "state").write_text("2")
    second = store.save("t2", packed(tmp_path) or b"", 1, "w")
    assert first.digest != second.digest
    assert not redis_client.exists(keys.task_checkpoint_blob("t2", first.digest))
    assert redis_client.exists(keys.task_checkpoint_blob("t2", second.digest))
    assert store.latest("t2") == second
    store.clear("t2")
    assert store.latest("t2") is None and not redis_client.exists(keys.task_checkpoint_blob("t2", second.digest))


def test_a_symlink_to_the_host_refuses_the_checkpoint_and_is_never_followed(tmp_path) -> None:
    (tmp_path / "state").write_text("ok")
    (tmp_path / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(CheckpointRefused, match="checkpoint not saved: 'passwd': not a regular file"):
        packed(tmp_path)


def test_a_fifo_refuses_the_checkpoint(tmp_path) -> None:
    (tmp_path / "state").write_text("ok")
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(CheckpointRefused, match="checkpoint not saved: 'pipe'"):
        packed(tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a device node needs root (CAP_MKNOD)")
def test_a_device_node_refuses_the_checkpoint(tmp_path) -> None:
    (tmp_path / "state").write_text("ok")
    os.mknod(tmp_path / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    with pytest.raises(CheckpointRefused, match="checkpoint not saved: 'null'"):
        packed(tmp_path)


def test_an_oversized_directory_is_refused_with_the_setting_named(tmp_path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 3000)
    (tmp_path / "b").write_bytes(b"y" * 3000)
    with pytest.raises(CheckpointRefused, match="checkpoint limit of 4096 bytes"):
        packed(tmp_path)


def test_a_checkpoint_changed_in_storage_is_refused(tmp_path, store, redis_client) -> None:
    (tmp_path / "state").write_text("honest")
    pointer = store.save("t3", packed(tmp_path) or b"", 1, "w")
    key = keys.task_checkpoint_blob("t3", pointer.digest)
    redis_client.set(key, redis_client.get(key).replace(b"honest", b"forged"))  # type: ignore[union-attr]
    with pytest.raises(CheckpointRefused, match="changed in storage"):
        store.load("t3")


def hostile_zip(name: str, mode: int = 0o100644, body: bytes = b"x") -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        info = zipfile.ZipInfo(name)
        info.external_attr = mode << 16
        archive.writestr(info, body)
    return out.getvalue()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (hostile_zip("../escape"), "path escapes the workspace"),
        (hostile_zip("/etc/cron.d/x"), "absolute path"),
        (hostile_zip("link", stat.S_IFLNK | 0o777, b"/etc/passwd"), "symbolic link"),
        (hostile_zip("dev", stat.S_IFCHR | 0o600), "device"),
        (hostile_zip("big", body=b"z" * (CAP + 1)), "more than the limit"),
    ],
)
def test_a_hostile_stored_checkpoint_is_refused_by_the_zip_rules(store, redis_client, settings, data, reason) -> None:
    """Written straight into Redis with a matching digest, as someone with access to it could."""
    pointer = store.save("t4", data, 1, "w")
    loaded = store.load("t4")
    assert loaded is not None and loaded[0] == pointer
    with pytest.raises(CheckpointRefused, match=f"checkpoint refused: .*{reason}"):
        restorable(loaded[1], settings)
