"""Running `hivemind demo` as a stranger would in the demo tests: a copy of the
checkout, the command line, and what the demo left running."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import psutil

from tests.services_kit import ROOT


def copy_checkout(dest: Path) -> Path:
    """The files a fresh clone would have (tracked, plus new files not ignored)."""
    listed = (
        subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest


def demo(*args: str) -> list[str]:
    return [sys.executable, "-m", "hivemind.cli", "demo", *args]


def leftovers(tmp: Path) -> list[str]:
    """Processes running from inside the test's folders (every demo child's cwd is)."""
    found = []
    for proc in psutil.process_iter(["pid", "cwd", "cmdline"]):
        cwd = proc.info.get("cwd") or ""
        if cwd.startswith(str(tmp)):
            found.append(f"{proc.info['pid']}: {' '.join(proc.info.get('cmdline') or [])}")
    return found
