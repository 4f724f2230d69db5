"""The console served for real (`hivemind console` in a subprocess on a free
loopback port) and a real browser driving it: Debian's chromium through
Playwright for Python (never `playwright install`; it would download one).

Screenshots of each page go to tests/console/screenshots/ (git-ignored), or
to HIVEMIND_CONSOLE_SCREENSHOTS when set, and are kept after the run. The
fixtures built on these live in tests/console/conftest.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.services_kit import ROOT

CHROMIUM = os.environ.get("HIVEMIND_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("HIVEMIND_CONSOLE_SCREENSHOTS", ROOT / "tests" / "console" / "screenshots"))
PASSWORD = "correct horse battery staple"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def console_env(redis_url: str, state_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVEMIND_")}
    env.update(
        REDIS_URL=redis_url,
        HIVEMIND_CONSOLE_STATE_DIR=str(state_dir),
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        HIVEMIND_NODEPOOL_ADDRESS="127.0.0.1:1",
    )
    env.update(extra)
    return env


@dataclass
class Console:
    url: str
    proc: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-8000:]


def start_console(redis_url: str, tmp: Path, **env: str) -> Console:
    port = free_port()
    log_path = tmp / "console.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hivemind.cli", "console", "--port", str(port)],
        cwd=ROOT,
        env=console_env(redis_url, tmp / "state", **env),
        stdout=open(log_path, "wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"console exited early:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(url + "/login", timeout=1) as reply:
                if reply.status == 200:
                    return Console(url, proc, log_path)
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"console not answering after 30 s:\n{log_path.read_text()}")


def stop_console(console: Console) -> None:
    if console.proc.poll() is None:
        console.proc.terminate()
        try:
            console.proc.wait(15)
        except subprocess.TimeoutExpired:
            console.proc.kill()
            console.proc.wait(5)


def log_in(page, password: str = PASSWORD) -> None:
    page.goto("/login")
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state("domcontentloaded")


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path
