"""The console on demand: what it holds while nobody looks, and what the first
page after an idle spell costs the visitor.

Two consoles on loopback, served by `hivemind console` in subprocesses against
the same Redis: one `--always-on` (the baseline: the console as it was) and one
on demand with a short idle exit (BENCH_IDLE_EXIT, default 2 s; 300 s on a
site). Per round: wait until the on-demand console's process has exited idle,
then time one GET /login on it (the activator starts the console; the request
waits in the listen backlog meanwhile), then one more on the same console
(warm), and one on the always-on console. PSS (psutil `memory_full_info().pss`)
of the activator alone, of the on-demand tree with its console up, and of the
always-on console, each after a page.

Needs Redis: REDIS_URL, else the test Redis (`scripts/with-services.sh` starts it
on HIVEMIND_TEST_REDIS_PORT). Rounds: BENCH_ROUNDS (default 7); medians.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
IDLE_EXIT = float(os.environ.get("BENCH_IDLE_EXIT", "2"))
REDIS_URL = os.environ.get("REDIS_URL") or f"redis://127.0.0.1:{os.environ.get('HIVEMIND_TEST_REDIS_PORT', '6399')}/0"
MiB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(state: Path, *args: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVEMIND_")}
    env |= {
        "REDIS_URL": REDIS_URL,
        "HIVEMIND_CONSOLE_STATE_DIR": str(state),
        "HIVEMIND_CONSOLE_PASSWORD": "bench-password",
        "HIVEMIND_CONSOLE_IDLE_EXIT": f"{IDLE_EXIT:g}",
        "HIVEMIND_NODEPOOL_ADDRESS": "127.0.0.1:1",
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "hivemind.cli", "console", "--port", str(port), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(state.parent / f"console-{port}.log", "wb"),
    )
    return proc, f"http://127.0.0.1:{port}/login"


def wait_listening(pid: int, url: str, timeout: float = 60.0) -> None:
    """Until `pid` listens on the url's port, read from the kernel (a connection would start a console)."""
    port = int(url.split(":")[2].split("/")[0])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in psutil.Process(pid).net_connections("tcp")):
            return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on {url} after {timeout:.0f} s")


def children(pid: int) -> list[psutil.Process]:
    return [c for c in psutil.Process(pid).children() if c.status() != psutil.STATUS_ZOMBIE]


def wait_idle(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while children(pid):
        if time.monotonic() > deadline:
            raise SystemExit(f"the on-demand console did not exit within {timeout:.0f} s")
        time.sleep(0.1)


def get(url: str) -> float:
    """Seconds for one page, connection to the last byte."""
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as reply:
        reply.read()
        if reply.status != 200:
            raise SystemExit(f"{url}: {reply.status}")
    return time.perf_counter() - t0


def pss(pid: int, with_children: bool) -> int:
    root = psutil.Process(pid)
    procs = [root, *(children(pid) if with_children else [])]
    return sum(p.memory_full_info().pss for p in procs)


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="bench-console-wake-"))
    (base / "state").mkdir()
    on_demand, on_demand_url = start(base / "state")
    always_on, always_on_url = start(base / "state", "--always-on")
    cold, warm, baseline = [], [], []
    try:
        wait_listening(on_demand.pid, on_demand_url)
        wait_listening(always_on.pid, always_on_url)
        activator_pss = pss(on_demand.pid, with_children=False)
        get(always_on_url)  # its first page pays its lazy set-up, as a visit to it would
        for _ in range(ROUNDS):
            wait_idle(on_demand.pid, IDLE_EXIT + 60)
            cold.append(get(on_demand_url))
            warm.append(get(on_demand_url))
            baseline.append(get(always_on_url))
        on_demand_pss = pss(on_demand.pid, with_children=True)
        always_on_pss = pss(always_on.pid, with_children=True)
    finally:
        for proc in (on_demand, always_on):
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(base, ignore_errors=True)
    report(activator_pss, on_demand_pss, always_on_pss, cold, warm, baseline)


def report(activator: int, on_demand: int, always_on: int, cold: list[float], warm: list[float], baseline: list[float]) -> None:
    med = statistics.median
    lines = [
        f"{len(cold)} rounds; the on-demand console exits after {IDLE_EXIT:g} s idle here (HIVEMIND_CONSOLE_IDLE_EXIT, "
        "300 s on a site). Medians; GET /login over loopback.",
        "",
        "| | PSS | first page after idle | next page |",
        "|---|---|---|---|",
        f"| always on (`--always-on`, the baseline) | {always_on / MiB:.1f} MiB | | {med(baseline) * 1000:.0f} ms |",
        f"| on demand, nobody visiting: the activator alone | {activator / MiB:.1f} MiB | | |",
        f"| on demand, visited: activator and console | {on_demand / MiB:.1f} MiB | {med(cold):.2f} s "
        f"(min {min(cold):.2f}, max {max(cold):.2f}) | {med(warm) * 1000:.0f} ms |",
        "",
        f"Idle memory, on demand / always on: {activator / always_on:.2f}. "
        f"First page after idle / a page of the always-on console: {med(cold) / med(baseline):.0f}×.",
    ]
    body = "\n".join(lines)
    print(body)
    write_section(
        "console-wake",
        "The console on demand: its idle memory, and the first page after an idle spell",
        "scripts/with-services.sh .venv/bin/python bench/bench_console_wake.py",
        body,
    )


if __name__ == "__main__":
    main()
