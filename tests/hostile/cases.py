"""Hostile inputs, each built here byte for byte, with the words its rejection
must contain (compared case-insensitively).

ZIP_CASES are task zips: the worker must REJECT them (or, for the few whose
harm only shows when run, end them FAILED) and the bridge must refuse them at
ExecuteTask. SPEC_CASES are TaskSpec fields a worker might be sent directly.

Zip carries no hard links (its format has no link-to-another-entry type);
what a zip can carry instead is a Unix mode with a file type other than
"regular file" or "directory" — symlink, device, fifo, socket, or bits no
type uses — and each of those is a case here.
"""

from __future__ import annotations

import io
import stat
import struct
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

MiB = 1024 * 1024
GOOD_MAIN = b"print('hello')\n"


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], bytes]
    reason: str  # must appear in the rejection, case-insensitively
    headers_only: bool = True  # False: caught only while entry data is read (the worker, not the bridge)

    def __str__(self) -> str:
        return self.name


def build(entries: list[tuple[str | zipfile.ZipInfo, bytes]], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are a case, not a mistake
        with zipfile.ZipFile(buf, "w", compression) as archive:
            for name, data in entries:
                archive.writestr(name, data)
    return buf.getvalue()


def with_main(name: str | zipfile.ZipInfo, data: bytes = b"x") -> Callable[[], bytes]:
    return lambda: build([("main.py", GOOD_MAIN), (name, data)])


def typed(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix: the type bits mean something
    info.external_attr = mode << 16
    return info


def renamed(placeholder: bytes, raw: bytes) -> Callable[[], bytes]:
    """A zip whose second entry's name bytes are `raw` (zipfile will not write them)."""

    def make() -> bytes:
        data = build([("main.py", GOOD_MAIN), (placeholder.decode(), b"x")])
        assert len(placeholder) == len(raw) and data.count(placeholder) == 2
        return data.replace(placeholder, raw)

    return make


def patched(
    offsets: tuple[tuple[bytes, int], ...], fmt: str, *values: int, compression: int = zipfile.ZIP_STORED
) -> Callable[[], bytes]:
    """A one-entry zip with fields at (signature, offset) overwritten in both headers."""

    def make() -> bytes:
        data = bytearray(build([("main.py", GOOD_MAIN)], compression))
        for signature, offset in offsets:
            struct.pack_into(fmt, data, data.find(signature) + offset, *values)
        return bytes(data)

    return make


def flags(bits: int) -> Callable[[], bytes]:
    def make() -> bytes:
        data = bytearray(build([("main.py", GOOD_MAIN)]))
        for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            at = data.find(signature) + offset
            (value,) = struct.unpack_from("<H", data, at)
            struct.pack_into("<H", data, at, value | bits)
        return bytes(data)

    return make


def ratio_bomb() -> bytes:
    return build([("main.py", GOOD_MAIN), ("zeros.bin", bytes(200 * MiB))])


def many_small_bombs() -> bytes:
    # 1,300 entries of 0.9 MiB zeros: each under the ratio check's 1 MiB floor,
    # together over the 1 GiB unpacked cap; the zip itself is ~1.2 MiB.
    one = bytes(900 * 1024)
    return build([("main.py", GOOD_MAIN)] + [(f"z/{i}.bin", one) for i in range(1300)])


def tiny_files(count: int) -> Callable[[], bytes]:
    return lambda: build([("main.py", GOOD_MAIN)] + [(f"f/{i}.txt", b"") for i in range(count - 1)], zipfile.ZIP_STORED)


def huge_declared() -> bytes:
    """One entry declaring 1.5 GiB (packed and unpacked alike, so the ratio is
    1:1): over the unpacked cap on its header alone."""
    data = bytearray(build([("main.py", GOOD_MAIN), ("huge.bin", b"x")], zipfile.ZIP_STORED))
    central = data.find(b"PK\x01\x02", data.find(b"PK\x01\x02") + 4)  # the second entry's record
    struct.pack_into("<II", data, central + 20, 1536 * MiB, 1536 * MiB)
    return bytes(data)


def lying_header() -> bytes:
    """Declares 5 bytes, holds 15: caught while the entry is read."""
    return patched(((b"PK\x03\x04", 18), (b"PK\x01\x02", 20)), "<II", 5, 5)()


def truncated() -> bytes:
    data = build([("main.py", GOOD_MAIN * 50), ("data.txt", b"y" * 5000)])
    return data[: len(data) // 2]


def requirements(text: str) -> Callable[[], bytes]:
    return lambda: build([("main.py", GOOD_MAIN), ("requirements.txt", text.encode())])


ZIP_CASES: list[Case] = [
    # -- paths
    Case("zip-slip", with_main("../evil.py"), "escapes the workspace"),
    Case("zip-slip-nested", with_main("a/../../evil.py"), "escapes the workspace"),
    Case("absolute-path", with_main("/etc/cron.d/evil"), "absolute path"),
    Case("drive-letter", with_main("C:/Windows/evil.py"), "drive letter"),
    Case("backslash-slip", with_main("..\\..\\evil.py"), "backslash"),
    Case("reserved-dir", with_main(".hivemind/deps/evil.py"), "reserved for the worker"),
    Case("duplicate-name", lambda: build([("main.py", GOOD_MAIN), ("main.py", b"print('evil')")]), "duplicate"),
    Case("file-as-directory", lambda: build([("main.py", GOOD_MAIN), ("a", b"f"), ("a/b.py", b"x")]), "is a file"),
    # -- names
    Case("name-control-chars", with_main("a\x1b[2Jb.py"), "control characters"),
    Case("name-nul", renamed(b"ok.pyZevil", b"ok.py\x00evil"), "control characters"),
    Case("name-newline", with_main("a\nb.py"), "control characters"),
    Case("name-invalid-utf8", renamed(b"ZZ.py", b"\xff\xfe.py"), "not valid utf-8"),
    Case("name-too-long", with_main("x" * 300 + ".py"), "name too long"),
    # -- entry types (what a zip can carry instead of links and devices)
    Case("symlink", with_main(typed("passwd", stat.S_IFLNK | 0o777), b"/etc/passwd"), "symbolic links"),
    Case("symlink-dir", with_main(typed("root", stat.S_IFLNK | 0o777), b"/"), "symbolic links"),
    Case("hardlink-like-type-bits", with_main(typed("link", 0o030000 | 0o644), b"main.py"), "unsupported file type"),
    Case("char-device", with_main(typed("mem", stat.S_IFCHR | 0o666)), "device files"),
    Case("block-device", with_main(typed("sda", stat.S_IFBLK | 0o666)), "device files"),
    Case("fifo", with_main(typed("pipe", stat.S_IFIFO | 0o666)), "fifos and sockets"),
    Case("socket", with_main(typed("docker.sock", stat.S_IFSOCK | 0o666)), "fifos and sockets"),
    Case("dir-with-data", with_main(typed("d/", stat.S_IFDIR | 0o755), b"data"), "directory entry holds data"),
    # -- sizes
    Case("zip-bomb-ratio", ratio_bomb, "compression ratio"),
    Case("zip-bomb-many-small", many_small_bombs, "more than the limit"),
    Case("10001-tiny-files", tiny_files(10_001), "more than"),
    Case("one-huge-file", huge_declared, "more than the limit"),
    Case("header-lies-about-size", lying_header, "corrupt data", headers_only=False),
    # -- not a zip at all
    Case("not-a-zip", lambda: b"MZ\x90\x00 this is a Windows program, not a zip", "not a zip"),
    Case("shell-script", lambda: b"#!/bin/sh\nrm -rf /\n", "not a zip"),
    Case("empty-zip", lambda: build([]), "holds no files"),
    Case("truncated-zip", truncated, "not a"),
    Case("encrypted", flags(0x1), "encrypted"),
    Case("unknown-compression", patched(((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)), "<H", 99), "unsupported compression"),
    Case("no-entry-point", lambda: build([("README.md", b"nothing to run"), ("sub/main.py", GOOD_MAIN)]), "no entry point"),
    # -- requirements.txt
    Case("req-editable-root", requirements("-e /\n"), "pip options"),
    Case("req-file-url", requirements("file:///etc\n"), "local paths and urls"),
    Case("req-parent-path", requirements("../x\n"), "local paths and urls"),
    Case("req-url", requirements("https://evil.example/pkg-1.0.whl\n"), "local paths and urls"),
    Case("req-direct-reference", requirements("pkg @ https://evil.example/pkg.whl\n"), "local paths and urls"),
    Case("req-index-url", requirements("--index-url http://evil.example/simple\nrequests\n"), "pip options"),
    Case("req-include-other", requirements("-r other.txt\n"), "pip options"),
    Case("req-variable", requirements("${HOME}\n"), "variables"),
    Case("req-not-utf8", lambda: build([("main.py", GOOD_MAIN), ("requirements.txt", b"\xff\xfe\x00r")]), "not valid utf-8"),
]

# The bridge checks headers only (it never unpacks: a 1 GiB zip is not
# inflated twice); the worker reads every byte while building the workspace.
HEADER_CASES = [case for case in ZIP_CASES if case.headers_only]

# TaskSpec fields sent straight to a worker (bypassing the bridge): the spec
# must be refused naming the field (values replace a good spec's).
SPEC_CASES: list[tuple[str, dict[str, object], str]] = [
    ("cpus-negative", {"cpus": -1}, "cpus"),
    ("cpus-zero", {"cpus": 0}, "cpus"),
    ("cpus-absurd", {"cpus": 1e12}, "cpus"),
    ("cpus-not-a-number", {"cpus": "lots"}, "cpus"),
    ("memory-negative", {"memory_mb": -512}, "memory_mb"),
    ("memory-zero", {"memory_mb": 0}, "memory_mb"),
    ("memory-absurd", {"memory_mb": 10**15}, "memory_mb"),
    ("memory-not-a-number", {"memory_mb": "a lot"}, "memory_mb"),
    ("gpus-negative", {"gpus": -1}, "gpus"),
    ("gpus-absurd", {"gpus": 10_000}, "gpus"),
    ("pids-zero", {"pids": 0}, "pids"),
    ("timeout-negative", {"timeout": -5}, "timeout"),
    ("timeout-nan", {"timeout": "NaN"}, "timeout"),
    ("payload-not-a-ref", {"payload": "../../etc/passwd"}, "payload"),
    ("env-bad-name", {"env": {"A B;rm": "x"}}, "env"),
    ("unknown-field", {"privileged": True}, "privileged"),
    # valid for the model, refused by the site's own limits
    ("timeout-absurd", {"timeout": 1e12}, "timeout"),
    ("cpus-over-site-max", {"cpus": 1000}, "cpus"),
    ("image-not-allowed", {"image": "docker:dind"}, "allowed images"),
    ("network-asked-for", {"network": "bridge"}, "network"),
    ("command-with-nul", {"command": ["sh", "-c", "id\x00"]}, "command"),
]

# Task ids with path separators or shell metacharacters.
BAD_TASK_IDS = ["../../etc/passwd", "a/b", "x;rm -rf /", "$(id)", "`id`", "a b", "-rf", "t\nx", "t" * 200, ""]
