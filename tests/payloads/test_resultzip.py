"""The result zip and the bounded workspace copy: what goes in, what is left
out and said so. Pure logic over hand-made tars (what a task could leave in
its workspace), no services."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from datetime import UTC, datetime, timedelta

from hivemind_celery.core.model import TaskOutcome, TaskStatus, UsageSummary
from hivemind_celery.payloads.resultzip import build_result_zip
from hivemind_celery.runtime.archive import READ_FACTOR, bounded_copy


def make_tar(members: list[tuple[str, bytes, bytes]], prefix: str = "") -> bytes:
    """members: (name, tar type, data); data of a symlink is its target."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(prefix + name)
            info.type = kind
            if kind == tarfile.REGTYPE:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                    info.linkname = data.decode()
                tar.addfile(info)
    return out.getvalue()


def outcome(**changes: object) -> TaskOutcome:
    start = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    fields: dict = dict(
        task_id="t-1",
        status=TaskStatus.SUCCEEDED,
        exit_code=0,
        started_at=start,
        finished_at=start + timedelta(seconds=12.5),
        worker="w1",
        log_tail="tail",
        usage=UsageSummary(cpu_seconds=3.0, samples=4, source="cgroup"),
        reward=7,
    )
    fields.update(changes)
    return TaskOutcome(**fields)


def read_zip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        return {info.filename: archive.read(info) for info in archive.infolist()}


def test_workspace_files_and_our_reports() -> None:
    tar = make_tar(
        [
            ("out", tarfile.DIRTYPE, b""),
            ("out/result.csv", tarfile.REGTYPE, b"a,b\n1,2\n"),
            ("main.py", tarfile.REGTYPE, b"print(1)"),
        ]
    )
    files = read_zip(build_result_zip(tar, outcome(), node="node-9", logs="hello\n", stopped=False, max_bytes=1 << 20))
    assert files["out/result.csv"] == b"a,b\n1,2\n"
    assert files["main.py"] == b"print(1)"
    assert "out/" in files
    assert files["task_logs.txt"] == b"hello\n"
    assert "task_stopped.txt" not in files
    log = files["execution_log.txt"].decode()
    assert "task: t-1" in log and "status: succeeded" in log and "node: node-9" in log
    assert "started: 2026-01-02T03:04:05+00:00" in log and "duration: 12.500 s" in log
    report = json.loads(files["execution_report.json"])
    assert report["status"] == "succeeded" and report["exit_code"] == 0
    assert report["duration_seconds"] == 12.5
    assert report["worker"] == "w1" and report["reward"] == 7
    assert report["usage"]["cpu_seconds"] == 3.0 and report["usage"]["source"] == "cgroup"


def test_logs_default_to_the_outcome_tail_and_stop_is_recorded() -> None:
    result = outcome(status=TaskStatus.CANCELLED, exit_code=None, reason="stopped by request")
    files = read_zip(build_result_zip(None, result, node="n", stopped=True, max_bytes=1 << 20))
    assert files["task_logs.txt"] == b"tail"
    assert b"t-1 was stopped by request" in files["task_stopped.txt"]
    assert json.loads(files["execution_report.json"])["reason"] == "stopped by request"
    assert set(files) == {"execution_log.txt", "task_logs.txt", "task_stopped.txt", "execution_report.json"}


def test_links_devices_bad_names_and_reserved_names_are_left_out_and_noted() -> None:
    tar = make_tar(
        [
            ("link", tarfile.SYMTYPE, b"/etc/shadow"),
            ("hard", tarfile.LNKTYPE, b"main.py"),
            ("dev", tarfile.CHRTYPE, b""),
            ("fifo", tarfile.FIFOTYPE, b""),
            ("../escape.txt", tarfile.REGTYPE, b"x"),
            ("bad\x1bname", tarfile.REGTYPE, b"x"),
            ("execution_report.json", tarfile.REGTYPE, b'{"status": "succeeded", "reward": 1000000}'),
            ("kept.txt", tarfile.REGTYPE, b"ok"),
        ]
    )
    files = read_zip(
        build_result_zip(tar, outcome(status=TaskStatus.FAILED, exit_code=1), node="n", logs="", stopped=False, max_bytes=1 << 20)
    )
    assert set(files) == {"kept.txt", "execution_log.txt", "task_logs.txt", "execution_report.json"}
    assert json.loads(files["execution_report.json"])["status"] == "failed"  # ours wins
    log = files["execution_log.txt"].decode()
    for name in ("'link'", "'hard'", "'dev'", "'fifo'", "'../escape.txt'", "'bad\\x1bname'", "'execution_report.json'"):
        assert f"skipped {name}" in log


def test_size_cap_skips_big_files_but_keeps_later_small_ones() -> None:
    tar = make_tar([("big.bin", tarfile.REGTYPE, b"x" * 5000), ("small.txt", tarfile.REGTYPE, b"s" * 10)])
    files = read_zip(
        build_result_zip(tar, outcome(), node="n", logs="", stopped=False, max_bytes=1000, notes=["'huge': from the runtime"])
    )
    assert "big.bin" not in files and files["small.txt"] == b"s" * 10
    log = files["execution_log.txt"].decode()
    assert "skipped 'big.bin': 5000 bytes would exceed the result limit of 1000 bytes" in log
    assert "'huge': from the runtime" in log


def test_truncated_workspace_tar_keeps_what_was_readable() -> None:
    tar = make_tar([("first.txt", tarfile.REGTYPE, b"1" * 600), ("second.txt", tarfile.REGTYPE, b"2" * 5000)])
    files = read_zip(build_result_zip(tar[:2048], outcome(), node="n", logs="", stopped=False, max_bytes=1 << 20))
    assert files["first.txt"] == b"1" * 600
    assert "unreadable" in files["execution_log.txt"].decode()


# --- bounded_copy: the runtime's side ------------------------------------------
def chunks_of(data: bytes, size: int = 700) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_bounded_copy_strips_the_top_dir_and_filters() -> None:
    raw = make_tar(
        [
            ("", tarfile.DIRTYPE, b""),
            ("a", tarfile.DIRTYPE, b""),
            ("a/x.txt", tarfile.REGTYPE, b"x"),
            ("l", tarfile.SYMTYPE, b"/etc"),
            ("big", tarfile.REGTYPE, b"b" * 3000),
            ("y.txt", tarfile.REGTYPE, b"y"),
        ],
        prefix="workspace/",
    )
    copy = bounded_copy(chunks_of(raw), max_bytes=100)
    with tarfile.open(fileobj=io.BytesIO(copy.tar)) as tar:
        assert [m.name for m in tar.getmembers()] == ["a", "a/x.txt", "y.txt"]
    assert copy.files == 2 and copy.file_bytes == 2
    assert any(note.startswith("'l': not a regular file") for note in copy.skipped)
    assert any(note.startswith("'big': 3000 bytes would exceed") for note in copy.skipped)


def test_bounded_copy_stops_reading_a_huge_stream() -> None:
    raw = make_tar([(f"f{i}", tarfile.REGTYPE, b"z" * 4096) for i in range(600)], prefix="workspace/")
    assert len(raw) > READ_FACTOR * 8192 + 1024 * 1024  # more than the read cap
    copy = bounded_copy(chunks_of(raw, 4096), max_bytes=8192)
    assert copy.files == 2  # only what fits in max_bytes
    assert any("stopped reading after" in note for note in copy.skipped)
    with tarfile.open(fileobj=io.BytesIO(copy.tar)) as tar:
        assert [m.name for m in tar.getmembers()] == ["f0", "f1"]


def test_bounded_copy_of_a_truncated_stream_ends_in_a_valid_tar() -> None:
    raw = make_tar([("ok.txt", tarfile.REGTYPE, b"k" * 100), ("cut.txt", tarfile.REGTYPE, b"c" * 8000)], prefix="workspace/")
    copy = bounded_copy([raw[:4096]], max_bytes=1 << 20)
    with tarfile.open(fileobj=io.BytesIO(copy.tar)) as tar:
        assert [m.name for m in tar.getmembers()] == ["ok.txt"]
    assert any("unreadable archive" in note for note in copy.skipped)


def test_set_up_and_main_step_usage_are_reported_separately() -> None:
    setup = UsageSummary(cpu_seconds=1.25, cpu_percent=25.0, wall_seconds=5.0, memory_peak_bytes=10, source="cgroup")
    main = UsageSummary(cpu_seconds=2.5, cpu_percent=50.0, wall_seconds=5.0, memory_peak_bytes=20, source="cgroup")
    whole = UsageSummary(cpu_seconds=3.75, cpu_percent=30.0, wall_seconds=12.5, memory_peak_bytes=20, source="cgroup")
    files = read_zip(build_result_zip(None, outcome(usage=whole, setup_usage=setup, main_usage=main), node="n"))
    report = json.loads(files["execution_report.json"])
    assert report["setup_usage"]["cpu_seconds"] == 1.25 and report["main_usage"]["cpu_seconds"] == 2.5
    assert report["usage"]["wall_seconds"] == report["duration_seconds"] == 12.5
    log = files["execution_log.txt"].decode()
    assert "usage (whole run): 3.750 CPU s, 30.0 % of the reserved cores over 12.500 s" in log
    assert "set-up step: 1.250 CPU s, 25.0 % of the reserved cores over 5.000 s" in log
    assert "main step: 2.500 CPU s, 50.0 % of the reserved cores over 5.000 s" in log
