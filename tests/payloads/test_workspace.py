"""Task zips from strangers: every rule of workspace.py, with hand-made zips.

Pure logic, no services: the zips are built here, byte for byte where
zipfile refuses to write the bad thing itself.
"""

from __future__ import annotations

import io
import stat
import struct
import tarfile
import warnings
import zipfile
from pathlib import Path

import pytest

from hivemind_celery.payloads.workspace import (
    WorkspaceError,
    ZipLimits,
    check_requirements,
    entry_command,
    extract_to_dir,
    inspect_zip,
    setup_command,
    zip_to_tar,
)


def build_zip(entries: list[tuple[str | zipfile.ZipInfo, bytes]], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names; we want them
        with zipfile.ZipFile(buf, "w", compression) as archive:
            for name, data in entries:
                archive.writestr(name, data)
    return buf.getvalue()


def typed(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix: the type bits below mean something
    info.external_attr = mode << 16
    return info


def rename_raw(data: bytes, placeholder: bytes, raw: bytes) -> bytes:
    """Swap a file name's bytes in the local and central headers (same length)."""
    assert len(placeholder) == len(raw) and data.count(placeholder) == 2
    return data.replace(placeholder, raw)


def set_flag_bits(data: bytes, bits: int) -> bytes:
    """OR general-purpose flag bits into the (single) entry's two headers."""
    out = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = out.find(signature) + offset
        (flags,) = struct.unpack_from("<H", out, at)
        struct.pack_into("<H", out, at, flags | bits)
    return bytes(out)


def rejected(data: bytes, limits: ZipLimits | None = None) -> str:
    with pytest.raises(WorkspaceError) as caught:
        inspect_zip(data, limits)
    return str(caught.value)


# --- names ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("../evil.py", "path escapes the workspace"),
        ("a/../../evil.py", "path escapes the workspace"),
        ("/etc/passwd", "absolute path"),
        ("C:/Windows/evil.py", "drive letter"),
        ("dir\\evil.py", "backslash"),
        ("a\x01b.py", "control characters"),
        ("a\x1b[31m.py", "control characters"),
        ("a//b.py", "empty or '.' path component"),
        ("./a.py", "empty or '.' path component"),
        ("x" * 300 + ".py", "name too long"),
        (".hivemind/deps/x.py", "reserved for the worker"),
    ],
)
def test_bad_names_are_refused_naming_entry_and_rule(name: str, rule: str) -> None:
    message = rejected(build_zip([("main.py", b"print(1)"), (name, b"x")]))
    assert rule in message
    assert f"entry {name!r}" in message


def test_nul_in_name_is_refused_even_though_zipfile_truncates_it() -> None:
    data = rename_raw(build_zip([("ok.pyZevil", b"x")]), b"ok.pyZevil", b"ok.py\x00evil")
    assert "control characters" in rejected(data)


def test_name_not_utf8_is_refused() -> None:
    data = rename_raw(build_zip([("main.py", b""), ("ZZ.py", b"x")]), b"ZZ.py", b"\xff\xfe.py")
    message = rejected(data)
    assert "not valid UTF-8" in message


def test_utf8_name_without_the_flag_is_read_as_utf8() -> None:
    raw = "é.py".encode()  # 5 bytes, written without the UTF-8 flag by many tools
    placeholder = b"Z" * (len(raw) - 3) + b".py"
    data = rename_raw(build_zip([(placeholder.decode(), b"print(1)")]), placeholder, raw)
    manifest = inspect_zip(data)
    assert [e.name for e in manifest.entries] == ["é.py"]


def test_duplicate_names_are_refused() -> None:
    message = rejected(build_zip([("main.py", b"1"), ("main.py", b"2")]))
    assert "'main.py': duplicate name" in message


def test_file_used_as_directory_is_refused() -> None:
    message = rejected(build_zip([("a", b"file"), ("a/b.py", b"x")]))
    assert "'a/b.py'" in message and "is a file" in message


# --- entry types ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "rule"),
    [
        (stat.S_IFLNK | 0o777, "symbolic links are not allowed"),
        (stat.S_IFCHR | 0o644, "device files are not allowed"),
        (stat.S_IFBLK | 0o644, "device files are not allowed"),
        (stat.S_IFIFO | 0o644, "fifos and sockets are not allowed"),
        (stat.S_IFSOCK | 0o644, "fifos and sockets are not allowed"),
        # zip has no hard-link type; any type bits we do not know are refused
        (0o030000 | 0o644, "unsupported file type"),
    ],
)
def test_non_regular_entries_are_refused(mode: int, rule: str) -> None:
    message = rejected(build_zip([("main.py", b""), (typed("link", mode), b"/etc/passwd")]))
    assert "entry 'link'" in message and rule in message


def test_directory_entry_with_data_is_refused() -> None:
    message = rejected(build_zip([("main.py", b""), (typed("d/", stat.S_IFDIR | 0o755), b"data")]))
    assert "entry 'd/': a directory entry holds data" in message


def test_encrypted_entry_is_refused() -> None:
    data = set_flag_bits(build_zip([("main.py", b"print(1)")]), 0x1)
    assert "'main.py': encrypted" in rejected(data)


# --- sizes and counts ----------------------------------------------------------
def test_zip_bomb_by_ratio_is_refused() -> None:
    data = build_zip([("main.py", b""), ("zeros.bin", bytes(4 * 1024 * 1024))])
    message = rejected(data, ZipLimits(max_compression_ratio=200))
    assert "'zeros.bin'" in message and "compression ratio" in message


def test_small_compressible_files_are_fine() -> None:
    # 64 KiB of zeros packs ~1000:1, but small entries are bounded by the total cap only
    manifest = inspect_zip(build_zip([("main.py", b""), ("pad.bin", bytes(64 * 1024))]))
    assert manifest.total_bytes == 64 * 1024


def test_too_many_files_is_refused() -> None:
    data = build_zip([(f"f{i}.py", b"") for i in range(6)])
    message = rejected(data, ZipLimits(max_files=5))
    assert "more than" in message and "5" in message


def test_too_large_unpacked_is_refused() -> None:
    data = build_zip([("main.py", b"x" * 600), ("b.bin", b"y" * 600)], zipfile.ZIP_STORED)
    message = rejected(data, ZipLimits(max_unpacked_bytes=1000))
    assert "'b.bin'" in message and "more than the limit of 1000 bytes" in message


def test_header_that_lies_about_size_is_caught_while_reading() -> None:
    data = bytearray(build_zip([("main.py", b"print('hello world')")], zipfile.ZIP_STORED))
    # declare 5 bytes instead of 20 in both headers (compressed and uncompressed)
    for signature, offset in ((b"PK\x03\x04", 18), (b"PK\x01\x02", 20)):
        at = data.find(signature) + offset
        struct.pack_into("<II", data, at, 5, 5)
    manifest = inspect_zip(bytes(data))  # the headers alone look fine
    with pytest.raises(WorkspaceError) as caught:
        zip_to_tar(bytes(data), manifest)
    assert "'main.py'" in str(caught.value)


# --- not a zip -----------------------------------------------------------------
def test_not_a_zip_empty_truncated_and_entryless() -> None:
    assert "empty" in rejected(b"")
    assert "not a zip file" in rejected(b"#!/bin/sh\necho hi\n")
    good = build_zip([("main.py", b"print(1)" * 100)])
    assert "not a" in rejected(good[: len(good) // 2])
    assert "holds no files" in rejected(build_zip([]))


def test_unsupported_compression_is_refused() -> None:
    data = bytearray(build_zip([("main.py", b"print(1)")], zipfile.ZIP_STORED))
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        struct.pack_into("<H", data, data.find(signature) + offset, 99)  # AES / unknown
    assert "unsupported compression method 99" in rejected(bytes(data))


# --- requirements.txt ----------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "rule"),
    [
        ("-e .", "pip options are not allowed"),
        ("--index-url http://evil.example/simple", "pip options are not allowed"),
        ("-i http://evil.example/simple", "pip options are not allowed"),
        ("--extra-index-url http://evil.example", "pip options are not allowed"),
        ("-f ./wheels", "pip options are not allowed"),
        ("-r other.txt", "pip options are not allowed"),
        ("./local_pkg", "local paths and URLs"),
        ("/abs/pkg", "local paths and URLs"),
        ("file:///etc/passwd", "local paths and URLs"),
        ("evil @ https://evil.example/evil.whl", "local paths and URLs"),
        ("git+https://github.com/x/y", "local paths and URLs"),
        ("requests \\", "line continuations and variables"),
        ("${EVIL}", "line continuations and variables"),
        ("not a requirement!!", "not a valid requirement"),
    ],
)
def test_bad_requirements_lines_are_refused(line: str, rule: str) -> None:
    text = f"requests>=2\n{line}\n"
    message = rejected(build_zip([("main.py", b""), ("requirements.txt", text.encode())]))
    assert "requirements.txt line 2" in message and rule in message


def test_good_requirements_give_a_setup_step() -> None:
    text = "# deps\nrequests>=2.31  # http\n\nnumpy[extra]==1.26.4 ; python_version >= '3.9'\n"
    manifest = inspect_zip(build_zip([("main.py", b""), ("requirements.txt", text.encode())]))
    assert manifest.requirements == ("requests>=2.31", "numpy[extra]==1.26.4 ; python_version >= '3.9'")
    command = setup_command(manifest)
    assert command is not None and command[:5] == ["python3", "-I", "-m", "pip", "install"] and "--isolated" in command
    assert command[-2:] == ["-r", "requirements.txt"]


def test_no_or_empty_requirements_give_no_setup_step() -> None:
    assert setup_command(inspect_zip(build_zip([("main.py", b"")]))) is None
    assert check_requirements("# only a comment\n\n") == []
    assert setup_command(inspect_zip(build_zip([("main.py", b""), ("requirements.txt", b"\n")]))) is None


# --- entry point ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["start.py", "run.py", "app.py", "main.py"], ["python3", "-u", "main.py"]),
        (["start.py", "run.py", "app.py"], ["python3", "-u", "app.py"]),
        (["start.py", "run.py", "zzz.py"], ["python3", "-u", "run.py"]),
        (["start.py", "aaa.py"], ["python3", "-u", "start.py"]),
        (["zeta.py", "Alpha.py", "beta.py", "run.sh"], ["python3", "-u", "Alpha.py"]),  # code point order
        (["sub/main.py", "run.sh"], None),  # only root-level files count
    ],
)
def test_entry_point_order(names: list[str], expected: list[str] | None) -> None:
    command = entry_command(inspect_zip(build_zip([(name, b"") for name in names])))
    if expected is None:
        assert command[:2] == ["sh", "-c"] and "bash run.sh" in command[2] and "sh run.sh" in command[2]
    else:
        assert command == expected


def test_no_entry_point_is_an_error() -> None:
    with pytest.raises(WorkspaceError, match="no entry point"):
        entry_command(inspect_zip(build_zip([("sub/main.py", b""), ("data.csv", b"1,2")])))


# --- tar for put_archive and extraction for the process runtime ----------------
def test_zip_to_tar_owns_files_by_task_user_with_plain_modes() -> None:
    data = build_zip(
        [
            (typed("bin/tool.sh", stat.S_IFREG | 0o4755), b"#!/bin/sh\n"),  # setuid asked for
            ("a/b/c.txt", b"hello"),
            ("main.py", b"print(1)"),
        ]
    )
    manifest = inspect_zip(data)
    with tarfile.open(fileobj=io.BytesIO(zip_to_tar(data, manifest))) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert list(members)[0] == "."
        assert {"a", "a/b", "bin"} <= {n for n, m in members.items() if m.isdir()}  # implied dirs
        assert all(m.uid == 1000 and m.gid == 1000 for m in members.values())
        assert members["bin/tool.sh"].mode == 0o755  # exec kept, setuid dropped
        assert members["a/b/c.txt"].mode == 0o644
        assert tar.extractfile(members["a/b/c.txt"]).read() == b"hello"


def test_extract_to_dir(tmp_path: Path) -> None:
    data = build_zip([("main.py", b"print(1)"), ("d/e/f.txt", b"x" * 10), (typed("run.sh", stat.S_IFREG | 0o6755), b"echo")])
    extract_to_dir(data, inspect_zip(data), tmp_path)
    assert (tmp_path / "d/e/f.txt").read_bytes() == b"x" * 10
    assert stat.S_IMODE((tmp_path / "run.sh").stat().st_mode) & 0o7000 == 0


def test_extract_to_dir_refuses_a_non_empty_dir(tmp_path: Path) -> None:
    (tmp_path / "main.py").symlink_to("/etc/passwd")  # a planted link is never written through
    data = build_zip([("main.py", b"print(1)")])
    with pytest.raises(WorkspaceError, match="not empty"):
        extract_to_dir(data, inspect_zip(data), tmp_path)
