"""The console served for real (`hivemind console` in a subprocess on a free
loopback port) and a real browser driving it: Debian's chromium through
Playwright for Python (never `playwright install`; it would download one).

Screenshots of each page go to tests/console/screenshots/ (git-ignored), or
to HIVEMIND_CONSOLE_SCREENSHOTS when set, and are kept after the run. The
fixtures built on these live in tests/console/conftest.py.

`start_held` starts `hivemind console` and waits for its activator to hold the
port without connecting to it (a connection would start the console); `CookieClient`
is a browser-like HTTP client (urllib with a cookie jar, no keep-alive) for the
tests that watch the console's processes come and go.
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

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


def _launch(redis_url: str, tmp: Path, args: tuple[str, ...], env: dict[str, str]) -> Console:
    """`hivemind console ARGS` started on a free port, its output in tmp/console.log."""
    port = free_port()
    log_path = tmp / "console.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hivemind.cli", "console", "--port", str(port), *args],
        cwd=ROOT,
        env=console_env(redis_url, tmp / "state", **env),
        stdout=open(log_path, "wb"),
        stderr=subprocess.STDOUT,
    )
    return Console(f"http://127.0.0.1:{port}", proc, log_path)


def start_console(redis_url: str, tmp: Path, *args: str, **env: str) -> Console:
    """`hivemind console ARGS` answering /login (its first page: with the activator,
    this starts the console process)."""
    launched = _launch(redis_url, tmp, args, env)
    url, proc, log_path = launched.url, launched.proc, launched.log_path
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


HOLDING = "holding the console's port"


def wait_for(check: Callable[[], object], what: str, console: Console, timeout: float = 60.0) -> object:
    """Polls `check` until it returns something true; fails naming `what` with the log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout:.0f} s: {what}\n{console.log()}")


def start_held(redis_url: str, tmp: Path, *args: str, **env: str) -> Console:
    """`hivemind console` whose activator holds the port; nothing has connected yet."""
    console = _launch(redis_url, tmp, args, env)
    proc = console.proc
    wait_for(lambda: HOLDING in console.log() or proc.poll() is not None, "the activator holding the port", console)
    assert proc.poll() is None, f"exited early:\n{console.log()}"
    return console


def console_children(console: Console) -> list[psutil.Process]:
    """The console processes the activator runs now (zombies not counted)."""
    try:
        children = psutil.Process(console.proc.pid).children()
    except psutil.NoSuchProcess:
        return []
    alive = []
    for child in children:
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.append(child)
        except psutil.NoSuchProcess:
            pass
    return alive


class CookieClient:
    """A browser's requests without the browser: cookies kept, one connection per request."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def get(self, path: str, timeout: float = 60.0) -> tuple[int, str]:
        try:
            with self.opener.open(self.base + path, timeout=timeout) as reply:
                return reply.status, reply.read().decode(errors="replace")
        except urllib.error.HTTPError as refused:
            return refused.code, refused.read().decode(errors="replace")

    def log_in(self, password: str = PASSWORD) -> int:
        """Logs in through the form (its CSRF token included); the final status."""
        status, page = self.get("/login")
        assert status == 200, (status, page[:300])
        token = re.search(r'name="csrf_token" value="([^"]*)"', page)
        assert token, page[:500]
        form = urllib.parse.urlencode({"csrf_token": token.group(1), "password": password}).encode()
        try:
            with self.opener.open(self.base + "/login", data=form, timeout=60) as reply:
                return int(reply.status)
        except urllib.error.HTTPError as refused:
            return refused.code


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
