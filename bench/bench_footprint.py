"""What the site costs the lender's machine: idle, and beside one long task.

Starts the site a volunteer runs (its Redis, the bridge joined to our Node
Pool, one `cpu` worker, the console) with the demo's own start functions, lets
it settle, then measures over one fixed window, per process with all its
children: PSS (psutil `memory_full_info().pss`) and CPU as a % of one core.
Then one long CPU-bound task goes through the pool and the same window is
measured again: the site's own CPU beside the task container's. In the idle
window, Debian's `boinc-client` (when `/usr/bin/boinc` is installed) runs
idle in a temporary data directory: the baseline a volunteer compares with.

The Node Pool is started too (the bridge must join one) but is not the
volunteer's: it is shown apart and not counted in the site.

The console runs on demand: `hivemind console` holds the port in a small
activator and runs the console process only from a visit until an idle spell
(HIVEMIND_CONSOLE_IDLE_EXIT, 300 s on a site). The demo's start answers one page,
so the console process starts; here its idle exit is BENCH_CONSOLE_IDLE_EXIT
(default 10 s) and the windows begin once it has gone: what a site holds from
five minutes after the last visit. Its row counts the activator and, when one
runs, the console process. After the windows one page is asked for and the
console's footprint with a visitor is shown too.

Needs dockerd, the task image and redis-server. Window: BENCH_WINDOW seconds
(default 45), settle time BENCH_SETTLE (default 25).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import docker
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from hivemind.demo import services  # noqa: E402
from hivemind.demo.paths import Credentials, DemoPaths  # noqa: E402
from hivemind.demo.procs import Supervisor, pick_port, stop_group  # noqa: E402
from hivemind.demo.runner import ensure_accounts  # noqa: E402
from hivemind.pool_client import PoolClient  # noqa: E402
from hivemind_celery.runtime.docker_config import LABEL_WORKER  # noqa: E402

WINDOW = float(os.environ.get("BENCH_WINDOW", "45"))
SETTLE = float(os.environ.get("BENCH_SETTLE", "25"))
CONSOLE_IDLE_EXIT = float(os.environ.get("BENCH_CONSOLE_IDLE_EXIT", "10"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "2"))
BOINC = "/usr/bin/boinc"
SITE = ("redis", "bridge", "worker-cpu", "console")
MiB = 1024 * 1024

BUSY_TASK = "import time\nend = time.monotonic() + {seconds}\nn = 0\nwhile time.monotonic() < end:\n    n += 1\nprint(n)\n"


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(pid: int) -> float:
    """CPU time of a process tree so far, reaped children included (a child that
    exits hands its time to its parent's children_* counters)."""
    total = 0.0
    for proc in tree(pid):
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def pss_bytes(pid: int) -> tuple[int, int]:
    """(PSS of the tree, number of processes in it)."""
    total, count = 0, 0
    for proc in tree(pid):
        try:
            total += proc.memory_full_info().pss
            count += 1
        except psutil.NoSuchProcess:
            continue
    return total, count


@dataclass
class Row:
    name: str
    pss: int
    processes: int
    cpu_pct: float


def measure(pids: dict[str, int], window: float) -> dict[str, Row]:
    """CPU over the window (start and end counters), PSS at the middle and end, averaged."""
    start = {name: cpu_seconds(pid) for name, pid in pids.items()}
    t0 = time.monotonic()
    time.sleep(window / 2)
    mid = {name: pss_bytes(pid) for name, pid in pids.items()}
    time.sleep(max(0.0, window - (time.monotonic() - t0)))
    elapsed = time.monotonic() - t0
    end_cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
    rows = {}
    for name, pid in pids.items():
        pss_end, count = pss_bytes(pid)
        rows[name] = Row(name, (mid[name][0] + pss_end) // 2, count, 100.0 * (end_cpu[name] - start[name]) / elapsed)
    return rows


def start_boinc(folder: Path) -> subprocess.Popen | None:
    if not os.access(BOINC, os.X_OK):
        return None
    return subprocess.Popen(
        [BOINC, "--dir", str(folder), "--skip_cpu_benchmarks", "--no_info_fetch", "--no_gui_rpc", "--allow_multiple_clients"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def dockerd_pid() -> int | None:
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] == "dockerd":
            return int(proc.pid)
    return None


def task_container_pid(client: docker.DockerClient, worker_id: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for container in client.containers.list(filters={"label": f"{LABEL_WORKER}={worker_id}"}):
            container.reload()
            pid = int(container.attrs["State"]["Pid"] or 0)
            if pid and container.attrs["State"]["Running"]:
                return pid
        time.sleep(0.5)
    raise SystemExit(f"no running task container of {worker_id} within {timeout:.0f}s")


def wait_console_idle(pid: int, timeout: float) -> None:
    """Until the console's tree is its activator alone (the console process exited idle)."""
    deadline = time.monotonic() + timeout
    while len(tree(pid)) > 1:
        if time.monotonic() > deadline:
            raise SystemExit(f"the console still runs {timeout:.0f} s after its idle exit of {CONSOLE_IDLE_EXIT:.0f} s")
        time.sleep(0.5)


def visited_console(url: str, pid: int) -> tuple[int, int]:
    """(PSS, processes) of the console's tree just after a page was served."""
    import urllib.request

    with urllib.request.urlopen(url + "login", timeout=60) as reply:
        reply.read()
    return pss_bytes(pid)


def fmt_row(label: str, row: Row) -> str:
    return f"| {label} | {row.processes} | {row.pss / MiB:.0f} MiB | {row.cpu_pct:.2f} |"


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="bench-footprint-"))
    paths = DemoPaths.under(base)
    creds, _ = Credentials.load_or_create(paths.credentials)
    sup = Supervisor(paths.logs)
    env = services.base_env(ROOT)
    taken: set[int] = set()

    def port(default: int) -> int:
        chosen = pick_port(default, taken)
        taken.add(chosen)
        return chosen

    worker_id = f"bench-footprint-{uuid.uuid4().hex[:6]}"
    boinc: subprocess.Popen | None = None
    client = docker.from_env()
    try:
        redis_url = services.start_redis(sup, paths, port(16390), creds.redis_password, env)
        env = env | {"REDIS_URL": redis_url}
        nodepool = services.start_nodepool(sup, paths, port(50151), env, ROOT)
        ensure_accounts(paths, creds)
        services.start_bridge(sup, port(50153), nodepool, creds.worker, creds.worker_password, env, ROOT)
        from hivemind_celery.celery_app import create_app
        from hivemind_celery.core.settings import Settings

        app = create_app(Settings(redis_url=redis_url))
        worker_env = env | {"HIVEMIND_RUNTIME": "docker", "HIVEMIND_DEFAULT_TIMEOUT": str(WINDOW * 3 + 120)}
        services.start_worker(sup, services.WorkerSpec("cpu", CONCURRENCY, worker_id), worker_env, ROOT, app)
        app.close()
        console_env = env | {"HIVEMIND_CONSOLE_IDLE_EXIT": f"{CONSOLE_IDLE_EXIT:g}"}
        console_url, _ = services.start_console(
            sup, port(5101), paths.root / "console", nodepool, creds.worker, creds.worker_password, console_env, ROOT
        )
        pids = {child.name: child.pid for child in sup.children}
        wait_console_idle(pids["console"], CONSOLE_IDLE_EXIT + 60)

        boinc_dir = base / "boinc"
        boinc_dir.mkdir()
        boinc = start_boinc(boinc_dir)
        time.sleep(SETTLE)
        watched = {name: pids[name] for name in (*SITE, "nodepool")}
        if boinc is not None:
            watched["boinc"] = boinc.pid
        dockerd = dockerd_pid()
        if dockerd is not None:
            watched["dockerd"] = dockerd
        load_before = os.getloadavg()[0]
        idle = measure(watched, WINDOW)
        if boinc is not None:
            stop_group(boinc.pid, 10.0)
            boinc = None

        with PoolClient(nodepool, creds.user, creds.password) as pool:
            task_id = f"bench-busy-{uuid.uuid4().hex[:6]}"
            busy_zip = _zip({"main.py": BUSY_TASK.format(seconds=WINDOW * 2 + 60)})
            pool.upload(task_id, busy_zip, 1, 100)
            task_pid = task_container_pid(client, worker_id, 180.0)
            time.sleep(5.0)  # past the task's start-up
            wait_console_idle(pids["console"], CONSOLE_IDLE_EXIT + 60)
            busy = measure({**{name: pids[name] for name in SITE}, "task": task_pid}, WINDOW)
            pool.stop(task_id)
        visited = visited_console(console_url, pids["console"])
    finally:
        if boinc is not None:
            stop_group(boinc.pid, 10.0)
        sup.stop_all()
    report(idle, busy, visited, load_before)
    shutil.rmtree(base, ignore_errors=True)


def _zip(files: dict[str, str]) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buf.getvalue()


def _met(ok: bool) -> str:
    return "met" if ok else "not met"


def report(idle: dict[str, Row], busy: dict[str, Row], visited: tuple[int, int], load: float) -> None:
    labels = {
        "redis": "Redis (embedded)",
        "bridge": "bridge",
        "worker-cpu": f"Celery worker `cpu` (up to {CONCURRENCY} pool processes)",
        "console": "console (its activator; the console process only during a visit)",
    }
    site_pss = sum(idle[name].pss for name in SITE)
    site_cpu = sum(idle[name].cpu_pct for name in SITE)
    site_procs = sum(idle[name].processes for name in SITE)
    lines = [
        f"Idle: {SETTLE:.0f} s after start, then a {WINDOW:.0f} s window; each process with its children. The console "
        f"process (started by the demo's readiness page) exited after {CONSOLE_IDLE_EXIT:.0f} s idle before the window "
        "(HIVEMIND_CONSOLE_IDLE_EXIT, 300 s on a site).",
        "",
        "| process | processes | PSS | CPU (% of one core) |",
        "|---|---|---|---|",
    ]
    lines += [fmt_row(labels[name], idle[name]) for name in SITE]
    lines.append(f"| **the site a volunteer runs** | **{site_procs}** | **{site_pss / MiB:.0f} MiB** | **{site_cpu:.2f}** |")
    lines.append(
        f"| (the console with a visitor: activator and console, just after a page) | {visited[1]} | {visited[0] / MiB:.0f} MiB | |"
    )
    lines.append(fmt_row("(our Node Pool, which the bridge joins; not the volunteer's)", idle["nodepool"]))
    if "dockerd" in idle:
        lines.append(fmt_row("(dockerd, needed by any Docker site)", idle["dockerd"]))
    boinc = idle.get("boinc")
    if boinc is not None:
        lines.append(fmt_row("Debian's `boinc-client`, idle, same window", boinc))
        lines += [
            "",
            f"Site / boinc-client: PSS {site_pss / max(boinc.pss, 1):.1f}×, CPU {site_cpu / max(boinc.cpu_pct, 1e-3):.0f}×.",
        ]
    else:
        lines += ["", f"boinc-client is not installed here ({BOINC} missing): no baseline row."]
    busy_site = sum(busy[name].cpu_pct for name in SITE)
    task = busy["task"].cpu_pct
    lines += [
        "",
        f"One long CPU-bound task (a Python busy loop, 1 core) through the pool, a {WINDOW:.0f} s window:",
        "",
        "| process | CPU (% of one core) |",
        "|---|---|",
    ]
    lines += [f"| {labels[name]} | {busy[name].cpu_pct:.2f} |" for name in SITE]
    lines += [
        f"| **the site's own** | **{busy_site:.2f}** |",
        f"| the task's container | {task:.2f} |",
        "",
        f"Site's own CPU / the task's: {100 * busy_site / max(task, 1e-3):.2f} %.",
    ]
    ratio = 100 * busy_site / max(task, 1e-3)
    lines += [
        "",
        "Goals (issue 26):",
        "",
        f"- idle site CPU ≤ 0.5 % of a core: {site_cpu:.2f} % ({_met(site_cpu <= 0.5)})",
        f"- idle site PSS ≤ 150 MiB: {site_pss / MiB:.0f} MiB ({_met(site_pss <= 150 * MiB)})",
        f"- the site's own CPU while a task runs ≤ 1 % of the task's: {ratio:.2f} % ({_met(ratio <= 1.0)})",
    ]
    shared = "shared with other work" if load >= 0.5 else "otherwise quiet"
    lines += [
        "",
        f"The machine ({os.cpu_count()} cores) was {shared} during the run (load average "
        f"{load:.1f} at the start of the idle window): the ratios are what count, not the absolute %.",
    ]
    body = "\n".join(lines)
    print(body)
    write_section(
        "footprint",
        "What the site costs the lender's machine (idle, and beside one task)",
        "scripts/with-services.sh .venv/bin/python bench/bench_footprint.py",
        body,
    )


if __name__ == "__main__":
    main()
