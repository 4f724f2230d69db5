"""The workspace disk watch on a real filesystem (no Docker needed): what it
counts, what it refuses to follow, and when it says a task is past its cap.
The runtime's use of it, with real containers, is in tests/hostile/test_escapes.py."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from hivemind_celery.runtime import disk_watch
from hivemind_celery.runtime.disk_watch import (
    MAX_DEPTH,
    DiskUse,
    DiskWatch,
    MiB,
    measure,
    start_watch,
)


def write(path: Path, size: int) -> None:
    path.write_bytes(os.urandom(size))


def test_counts_allocated_bytes_and_entries(tmp_path: Path) -> None:
    write(tmp_path / "a.bin", 3 * MiB)
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "b.bin", 1 * MiB)
    use = measure([str(tmp_path)])
    assert use.entries == 3  # a.bin, sub, sub/b.bin
    assert 4 * MiB <= use.bytes < 4 * MiB + 64 * 1024  # plus the directory's own block


def test_a_sparse_file_counts_what_it_holds_not_its_length(tmp_path: Path) -> None:
    with open(tmp_path / "sparse", "wb") as handle:
        handle.truncate(10 * 1024 * MiB)  # 10 GiB long, nothing written
    assert measure([str(tmp_path)]).bytes < MiB


def test_hard_links_count_once(tmp_path: Path) -> None:
    write(tmp_path / "one", 2 * MiB)
    for i in range(5):
        os.link(tmp_path / "one", tmp_path / f"link{i}")
    use = measure([str(tmp_path)])
    assert use.entries == 6
    assert use.bytes < 3 * MiB


def test_symlinks_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    write(outside / "big", 8 * MiB)
    inside = tmp_path / "inside"
    inside.mkdir()
    (inside / "to-dir").symlink_to(outside)
    (inside / "to-file").symlink_to(outside / "big")
    (inside / "to-root").symlink_to("/")
    use = measure([str(inside)])
    assert use.entries == 3
    assert use.bytes < MiB


def test_a_tree_deeper_than_the_limit_is_reported_not_walked(tmp_path: Path) -> None:
    path = tmp_path
    for _ in range(MAX_DEPTH + 5):
        path = path / "d"
    path.mkdir(parents=True)
    assert measure([str(tmp_path)]).too_deep
    shallow = tmp_path / "shallow"
    (shallow / "a" / "b").mkdir(parents=True)
    assert not measure([str(shallow)]).too_deep


def test_counting_stops_past_the_entry_cap(tmp_path: Path) -> None:
    for i in range(500):
        (tmp_path / f"f{i}").touch()
    assert measure([str(tmp_path)], stop_at_entries=50).entries == 51
    assert measure([str(tmp_path)]).entries == 500


def test_sums_over_several_volumes(tmp_path: Path) -> None:
    for name in ("workspace", "deps"):
        (tmp_path / name).mkdir()
        write(tmp_path / name / "x", 2 * MiB)
    use = measure([str(tmp_path / "workspace"), str(tmp_path / "deps")])
    assert use.entries == 2
    assert use.bytes >= 4 * MiB


def test_verdicts_name_the_cap() -> None:
    watch = DiskWatch([], max_mb=10, max_files=100, interval=1)
    assert watch.verdict(DiskUse(bytes=10 * MiB, entries=100)) is None
    assert "HIVEMIND_WORKSPACE_MAX_MB" in watch.verdict(DiskUse(bytes=10 * MiB + 1, entries=1))
    assert "HIVEMIND_WORKSPACE_MAX_FILES" in watch.verdict(DiskUse(bytes=0, entries=101))
    assert "levels deep" in watch.verdict(DiskUse(too_deep=True))
    unlimited = DiskWatch([], max_mb=0, max_files=0, interval=1)
    assert unlimited.verdict(DiskUse(bytes=10**12, entries=10**9)) is None


def test_the_watch_notices_a_task_growing_past_its_cap(tmp_path: Path) -> None:
    watch = start_watch([str(tmp_path)], max_mb=2, max_files=0, interval=0.05, task_id="t1")
    assert watch is not None
    try:
        time.sleep(0.2)
        assert watch.exceeded is None  # empty: within the cap
        write(tmp_path / "grow", 3 * MiB)
        deadline = time.monotonic() + 5
        while watch.exceeded is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert watch.exceeded is not None and "more than 2 MiB" in watch.exceeded
        watch.join(timeout=2)
        assert not watch.is_alive()  # it ends once it has said so
    finally:
        watch.stop()


def test_no_watch_without_a_cap_or_when_the_volumes_cannot_be_seen(tmp_path: Path, caplog, monkeypatch) -> None:
    assert start_watch([str(tmp_path)], max_mb=0, max_files=0, interval=1) is None
    monkeypatch.setattr(disk_watch, "_warned_invisible", False)
    with caplog.at_level(logging.WARNING, logger="hivemind_celery.runtime.disk_watch"):
        assert start_watch([str(tmp_path), "/no/such/volume/_data"], max_mb=1, max_files=0, interval=1) is None
        assert start_watch([None], max_mb=1, max_files=0, interval=1) is None
    warnings = [r for r in caplog.records if "not enforced" in r.getMessage()]
    assert len(warnings) == 1  # said once per process, not once per task
    assert "/no/such/volume/_data" in warnings[0].getMessage()


def test_a_directory_hidden_from_the_worker_is_reported() -> None:
    """A task may chmod its own directories; a worker that is not root then
    cannot look inside, so a hidden directory is itself the verdict. Measured
    as another uid in a subprocess when the test runs as root, since root
    reads through any mode."""
    import shutil
    import subprocess
    import sys
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="hm-watch-", dir="/tmp"))  # /tmp: reachable by any uid
    try:
        top.chmod(0o755)
        (top / "open").mkdir()
        (top / "hidden").mkdir()
        write(top / "hidden" / "big", MiB)
        (top / "hidden").chmod(0)
        # Imports first: the interpreter's own files may not be readable by nobody.
        drop = "os.setgid(65534); os.setuid(65534); " if os.geteuid() == 0 else ""
        probe = (
            "import os, sys; from hivemind_celery.runtime.disk_watch import measure; "
            f"{drop}print(measure([sys.argv[1]]).unreadable)"
        )
        out = subprocess.run(
            [sys.executable, "-c", probe, str(top)],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )
        assert out.stdout.strip() == "hidden", out
    finally:
        (top / "hidden").chmod(0o755)
        shutil.rmtree(top)
    watch = DiskWatch([], max_mb=1, max_files=0, interval=1)
    assert "'hidden'" in watch.verdict(DiskUse(unreadable="hidden"))
