"""The whole chain against direct docker runs: throughput of short tasks.

Chain: a client logged in to our Node Pool (`python -m nodepool`, a subprocess)
uploads TASKS task zips as `hivemind submit` does, the pool dispatches them to
the bridge (`python -m bridge`, a subprocess), the bridge queues them, a real
`celery worker -c N` subprocess runs each in a hardened container, the result
goes back through the bridge to the pool, and the client fetches every result
zip (`hivemind result`), checking the task's output in it. Timed from the first
upload to the last result fetched.

Direct: the same number of `docker run`s of the same image and command (the
task's main.py as `python3 -u -c`), hardened the same way (non-root, read-only
root, /tmp tmpfs, all capabilities dropped, no-new-privileges, no network,
1 CPU, 1 GiB, pids and open-file limits, an init), on a thread pool of N.

The two sides alternate in rounds of ROUND tasks (the machine's load drifts;
alternating spreads it over both), and each side's time is the sum of its
rounds. Ratio = chain throughput / direct throughput (1.0 = the chain costs
nothing).
Needs dockerd, the task image and a Redis (HIVEMIND_TEST_REDIS); uses database
59 and empties it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import docker
import psutil
import redis
from docker.types import Ulimit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from hivemind.pool_client import PoolClient  # noqa: E402
from hivemind_celery.celery_app import create_app  # noqa: E402
from hivemind_celery.core.settings import Settings  # noqa: E402
from nodepool import accounts  # noqa: E402
from nodepool.store import Store  # noqa: E402
from proto import nodepool_pb2 as pb  # noqa: E402
from tests.e2e_kit import OWNER, SITE, Site  # noqa: E402
from tests.nodepool_kit import PASSWORD, wait_for  # noqa: E402
from tests.services_kit import PYTHON_IMAGE, WorkerProcess, make_zip  # noqa: E402

TASKS = int(os.environ.get("BENCH_TASKS", "50"))
PARALLEL = int(os.environ.get("BENCH_PARALLEL", "2"))
ROUND = int(os.environ.get("BENCH_ROUND", "10"))
DB = 59
COMMAND = "scripts/with-services.sh .venv/bin/python bench/bench_chain.py"
FINAL = {"COMPLETED", "FAILED", "STOPPED"}
CPU_LABELS = {
    "client": "this script (chain: uploads, polls, fetches; direct: the docker SDK calls)",
    "machine": "**whole machine** (every process: busy time of all cores)",
}
ROUNDS = 20000
TASK_CODE = f"""\
import hashlib
digest = b"hivemind"
for _ in range({ROUNDS}):
    digest = hashlib.sha256(digest).digest()
print(digest.hex())
"""


def expected_output() -> str:
    digest = b"hivemind"
    for _ in range(ROUNDS):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


def direct_run(client: docker.DockerClient) -> str:
    out = client.containers.run(
        PYTHON_IMAGE,
        ["python3", "-u", "-c", TASK_CODE],
        remove=True,
        user="1000:1000",
        working_dir="/tmp",
        read_only=True,
        tmpfs={"/tmp": "size=100m,noexec,nosuid,nodev"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        network_mode="none",
        mem_limit="1024m",
        memswap_limit="1024m",
        nano_cpus=int(1e9),
        pids_limit=256,
        init=True,
        ulimits=[Ulimit(name="nofile", soft=1024, hard=1024)],
    )
    return out.decode().strip()


def timed_direct_run(client: docker.DockerClient) -> tuple[str, float]:
    start = time.perf_counter()
    output = direct_run(client)
    return output, time.perf_counter() - start


def run_direct(client: docker.DockerClient, count: int, runs: list[float] | None = None) -> float:
    """`count` runs on N threads; seconds for all. Each run's own time goes to `runs`."""
    want = expected_output()
    start = time.perf_counter()
    with ThreadPoolExecutor(PARALLEL) as threads:
        results = list(threads.map(lambda _: timed_direct_run(client), range(count)))
    elapsed = time.perf_counter() - start
    bad = [output for output, _ in results if output != want]
    if bad:
        raise SystemExit(f"{len(bad)} direct runs printed the wrong output, e.g. {bad[0][:200]!r}")
    if runs is not None:
        runs.extend(seconds for _, seconds in results)
    return elapsed


class CpuMeter:
    """CPU seconds (user + system) used between `start` and `stop`, by name. The
    chain's own processes compete with the tasks for the same cores, so their
    CPU per task is what the chain costs. Each name maps to a reading of a
    cumulative CPU total (see process_cpu, children_cpu, machine_cpu)."""

    def __init__(self, readings: dict[str, Callable[[], float]]) -> None:
        self.readings = readings
        self.used: dict[str, float] = dict.fromkeys(readings, 0.0)
        self._before: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        return {name: read() for name, read in self.readings.items()}

    def start(self) -> None:
        self._before = self._now()

    def stop(self) -> None:
        for name, value in self._now().items():
            self.used[name] += value - self._before[name]


def _cpu_seconds(proc: psutil.Process) -> float:
    try:
        times = proc.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


def process_cpu(pid: int) -> Callable[[], float]:
    return lambda: _cpu_seconds(psutil.Process(pid))


def children_cpu(pid: int) -> Callable[[], float]:
    """A process's descendants, e.g. a worker's pool processes."""
    return lambda: sum(_cpu_seconds(child) for child in psutil.Process(pid).children(recursive=True))


def machine_cpu() -> float:
    """Busy time of all cores: every process on the machine."""
    busy = psutil.cpu_times()
    return busy.user + busy.nice + busy.system + busy.irq + busy.softirq


def run_chain(site: Site, count: int, runs: list[float] | None = None, rounds: list[list[str]] | None = None) -> float:
    """Submit `count` tasks, wait for all, fetch every result; seconds from first upload to last
    fetch. Each task's run as its worker measured it (execution_report.json) goes to `runs`,
    the round's task ids to `rounds`."""
    want = expected_output()
    data = make_zip({"main.py": TASK_CODE})
    with PoolClient(site.pool_address, OWNER, PASSWORD) as client:
        token = client.token
        ids = [f"bench-{uuid.uuid4().hex[:12]}" for _ in range(count)]
        if rounds is not None:
            rounds.append(ids)
        start = time.perf_counter()
        for task_id in ids:
            reply = client.call(
                client.master.UploadTask,
                pb.UploadTaskRequest(task_id=task_id, task_zip=data, memory_gb=1, cpu_score=100, token=token),
            )
            if not reply.success:
                raise SystemExit(f"upload refused: {reply.message}")
        waiting = set(ids)
        while waiting:
            for info in client.tasks():
                if info.task_id in waiting and info.status in FINAL:
                    result = client.result(info.task_id)
                    if result is None:
                        continue  # the status is in, the result not yet: next pass
                    seconds = check_result(info, result, want)
                    if runs is not None:
                        runs.append(seconds)
                    waiting.discard(info.task_id)
            time.sleep(0.1)  # the pool answers with all of the user's tasks: poll gently
        return time.perf_counter() - start


_WORKER_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ \S+: task (starting|finished)\b.*"
    r"task_id=(\S+)"
)


def slot_gaps(worker_log: str, rounds: list[list[str]]) -> list[float]:
    """Seconds a worker slot stayed empty between a task finishing and the next
    one starting, within each round (the worker's own log lines)."""
    when: dict[tuple[str, str], float] = {}
    for line in worker_log.splitlines():
        match = _WORKER_LINE.match(line)
        if match:
            stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            when[(match.group(2), match.group(3))] = stamp
    gaps = []
    for ids in rounds:
        freed = sorted(when[("finished", i)] for i in ids if ("finished", i) in when)
        for start in sorted(when[("starting", i)] for i in ids if ("starting", i) in when):
            if freed and freed[0] <= start:
                gaps.append(start - freed.pop(0))
    return gaps


def check_result(info: pb.TaskInfo, result: bytes, want: str) -> float:
    """Fail unless the task succeeded with the right output; returns its reported duration."""
    with zipfile.ZipFile(io.BytesIO(result)) as archive:
        report = json.loads(archive.read("execution_report.json"))
        logs = archive.read("task_logs.txt").decode()
    if info.status != "COMPLETED" or report["status"] != "succeeded" or want not in logs:
        raise SystemExit(f"task {info.task_id} did not succeed: {info.status} {info.message} {logs[-300:]!r}")
    return float(report["duration_seconds"])


def main() -> None:
    redis_url = os.environ.get("HIVEMIND_TEST_REDIS", "redis://localhost:6379") + f"/{DB}"
    redis.Redis.from_url(redis_url).flushdb()
    client = docker.from_env(timeout=120)
    tmp = Path(tempfile.mkdtemp(prefix="bench-chain-"))
    site = Site(tmp, redis_url, test_intervals=False)  # the shipped heartbeat, relay and dispatch timers
    store = Store(site.db)
    accounts.create_user(store, OWNER, PASSWORD, 10**9)
    accounts.create_user(store, SITE, PASSWORD)
    store.close()
    app = create_app(Settings(redis_url=redis_url))
    worker = WorkerProcess(
        redis_url, "cpu", tmp / "worker.log", concurrency=PARALLEL, worker_id="bench-chain", HIVEMIND_CAPACITY_CPUS=str(PARALLEL)
    )
    try:
        worker.wait_ready(app)
        site.start_pool()
        site.start_bridge()
        wait_for(site.node_idle, timeout=60, what="the bridge Idle on the pool")
        # Warm both paths (images in the page cache, connections open).
        run_chain(site, PARALLEL)
        run_direct(client, PARALLEL)
        chain_s = direct_s = 0.0
        chain_runs: list[float] = []
        chain_rounds: list[list[str]] = []
        direct_runs: list[float] = []
        chain_cpu = CpuMeter(
            {
                "Node Pool": process_cpu(site.pool.proc.pid),
                "bridge": process_cpu(site.bridge.proc.pid),
                "worker main process": process_cpu(worker.proc.pid),
                "worker pool processes": children_cpu(worker.proc.pid),
                "client": process_cpu(os.getpid()),
                "machine": machine_cpu,
            }
        )
        direct_cpu = CpuMeter({"client": process_cpu(os.getpid()), "machine": machine_cpu})
        for size in [ROUND] * (TASKS // ROUND) + ([TASKS % ROUND] if TASKS % ROUND else []):
            chain_cpu.start()
            chain_s += run_chain(site, size, chain_runs, chain_rounds)
            chain_cpu.stop()
            direct_cpu.start()
            direct_s += run_direct(client, size, direct_runs)
            direct_cpu.stop()
    finally:
        site.stop()
        worker.stop()
        app.close()
        redis.Redis.from_url(redis_url).flushdb()

    chain_rate, direct_rate = TASKS / chain_s, TASKS / direct_s
    ratio = chain_rate / direct_rate
    chain_run, direct_run_s = statistics.median(chain_runs), statistics.median(direct_runs)
    # What is left of a chain cycle per slot once the container phase is taken out.
    between = chain_s * PARALLEL / TASKS - chain_run
    gaps = slot_gaps((tmp / "worker.log").read_text(errors="replace"), chain_rounds)
    gap = statistics.median(gaps) if gaps else float("nan")
    per_task = {name: seconds / TASKS for name, seconds in chain_cpu.used.items()}
    direct_per_task = {name: seconds / TASKS for name, seconds in direct_cpu.used.items()}
    cpu_rows = "".join(
        f"| {CPU_LABELS.get(name, name)} | {per_task[name] * 1000:.0f} ms | "
        + (f"{direct_per_task[name] * 1000:.0f} ms |\n" if name in direct_per_task else "– |\n")
        for name in per_task
    )
    chain_busy = chain_cpu.used["machine"] / (chain_s * os.cpu_count())
    direct_busy = direct_cpu.used["machine"] / (direct_s * os.cpu_count())
    cpu_bound = direct_per_task["machine"] / per_task["machine"]
    chain_own = sum(value for name, value in per_task.items() if name != "machine")
    direct_own = direct_per_task["client"]
    # The chain's own CPU per task at which its machine CPU per task would allow 0.85x.
    needed = chain_own - (per_task["machine"] - direct_per_task["machine"] / 0.85)
    body = f"""\
{TASKS} short tasks (`main.py`: {ROUNDS} chained SHA-256 rounds, prints the digest) in
`{PYTHON_IMAGE}`, parallelism N = {PARALLEL} on both sides (worker `-c {PARALLEL}` offering {PARALLEL}
CPUs, each task asking for 1 CPU and 1 GB; direct: a thread pool of {PARALLEL}). One warm-up of
{PARALLEL} tasks per side first, then rounds of {ROUND} tasks alternating between the sides; each
time below is the sum of that side's rounds. Every output was checked.

| path | {TASKS} tasks | throughput | ratio |
|---|---|---|---|
| direct hardened `docker run` | {direct_s:.1f} s | {direct_rate:.2f} tasks/s | 1.00 |
| chain: upload → Node Pool → bridge → Celery worker → container → result fetched | {chain_s:.1f} s | {chain_rate:.2f} tasks/s | {ratio:.2f} |

Where the time goes, per task: the direct `docker run` (create, start, wait, logs, remove)
took a median {direct_run_s:.2f} s; in the chain, the worker's own measure of a run (container
start to end, `duration_seconds` in execution_report.json) was a median {chain_run:.2f} s, and
about {between:.2f} s per task and slot went to the rest (workspace volume and copy in and out,
result zip, relay, result upload, the next dispatch and intake). Dispatch, status and relay are
event-driven (the pool dispatches at once on an upload or an Idle report, the bridge reports
as soon as a task has finished, the relay wakes when a worker stores a result); the intervals
run at their shipped defaults here (dispatch 2 s, heartbeat 5 s, relay 1 s), as fallbacks.
A slot freed by a finished task stayed empty a median {gap * 1000:.0f} ms before its next task
started (the worker's log: outcome stored, room announced to the pool, dispatch, intake, queue).

CPU time (user + system) per task, measured over each side's rounds (psutil):

| CPU per task | chain | direct |
|---|---|---|
{cpu_rows}
The tasks are CPU-bound and every process of the chain shares this machine's {os.cpu_count()} cores with
them; the direct side has only this script. The machine was busy {chain_busy:.0%} of the chain's time
and {direct_busy:.0%} of the direct side's. With the cores equally busy on both sides, throughput goes
as 1 / (machine CPU per task): here that bound is {cpu_bound:.2f}× for the chain. The chain's own
processes (Node Pool, bridge, worker, client) use {chain_own * 1000:.0f} ms per task against the direct client's
{direct_own * 1000:.0f} ms; to reach 0.85× on {os.cpu_count()} cores they would have to use
about {needed * 1000:.0f} ms.

Goal: chain ≥ 0.85× direct throughput. {"Met." if ratio >= 0.85 else "Not met."}
"""
    print(body)
    write_section("chain", f"Whole chain vs direct docker runs ({TASKS} short tasks)", COMMAND, body)


if __name__ == "__main__":
    main()
