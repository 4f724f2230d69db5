"""The whole chain as real processes, for the end-to-end tests: our Node Pool
(`python -m nodepool`), the bridge (`python -m bridge`), the user CLI
(`python -m hivemind.cli`), with Celery worker subprocesses started by
conftest's `start_worker` on the same Redis. Everything talks gRPC on loopback.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from hivemind_celery.core.reward import RewardPolicy, compute_reward
from tests.nodepool_kit import PASSWORD, free_port, serving, wait_for
from tests.services_kit import ROOT, make_zip

OWNER = "owner"
SITE = "site1"  # the bridge's worker account; its user name is its node id
WORKER_SECRET = "e2e-pool-to-bridge-secret"
# The pool pays one time unit per second (not per hour) so that a task of a few
# seconds earns a reward well above the minimum and a wrong figure shows.
POOL_REWARD_ENV = {"HIVEMIND_REWARD_TIME_BONUS_UNIT": "1", "HIVEMIND_REWARD_TIME_BONUS_CAP": "100000"}
POOL_MAX_TASK_BYTES = 4 * 1024 * 1024
BRIDGE_MAX_PAYLOAD_BYTES = 2 * 1024 * 1024  # below the pool's limit: the bridge's own check shows
# The policy the pool runs with (POOL_REWARD_ENV), written out here.
POOL_POLICY = RewardPolicy(time_bonus_unit=1.0, time_bonus_cap=100000.0)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVEMIND_") and k != "REDIS_URL"}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", HIVEMIND_LOG_JSON="1", **extra)
    return env


@dataclass
class Proc:
    """One long-running subprocess with its output in a log file (appended across restarts)."""

    args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None

    def start(self) -> Proc:
        with self.log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, *self.args], cwd=ROOT, env=self.env, stdout=log_file, stderr=subprocess.STDOUT
            )
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_records(self) -> list[dict]:
        records = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except ValueError:
                    pass
        return records


# Short timers for tests: heartbeats, back-offs and the fallback passes behind
# the event-driven paths then take fractions of a second, not the defaults' seconds.
POOL_TEST_INTERVALS = {"HIVEMIND_NODEPOOL_DISPATCH_INTERVAL_S": "0.2", "HIVEMIND_NODEPOOL_NODE_BACKOFF_S": "1"}
BRIDGE_TEST_INTERVALS = {
    "HIVEMIND_HEARTBEAT_INTERVAL": "0.3",
    "HIVEMIND_REGISTRATION_INTERVAL": "0.5",
    "HIVEMIND_RELAY_INTERVAL": "0.2",
}


@dataclass
class Site:
    tmp: Path
    redis_url: str
    pool_port: int = field(default_factory=free_port)
    bridge_port: int = field(default_factory=free_port)
    test_intervals: bool = True  # False: the shipped defaults (a benchmark measures those)

    def __post_init__(self) -> None:
        self.db = self.tmp / "pool.db"
        pool_intervals = POOL_TEST_INTERVALS if self.test_intervals else {}
        bridge_intervals = BRIDGE_TEST_INTERVALS if self.test_intervals else {}
        self.pool = Proc(
            ["-m", "nodepool"],
            _clean_env(
                HIVEMIND_NODEPOOL_DB=str(self.db),
                HIVEMIND_NODEPOOL_PORT=str(self.pool_port),
                HIVEMIND_NODEPOOL_HOST="127.0.0.1",
                HIVEMIND_NODEPOOL_WORKER_SECRET=WORKER_SECRET,
                HIVEMIND_NODEPOOL_MAX_TASK_BYTES=str(POOL_MAX_TASK_BYTES),
                **POOL_REWARD_ENV,
                **pool_intervals,
            ),
            self.tmp / "pool.log",
        )
        self.bridge = Proc(
            ["-m", "bridge"],
            _clean_env(
                REDIS_URL=self.redis_url,
                HIVEMIND_NODEPOOL_ADDRESS=f"localhost:{self.pool_port}",
                HIVEMIND_USERNAME=SITE,
                HIVEMIND_PASSWORD=PASSWORD,
                HIVEMIND_BRIDGE_PORT=str(self.bridge_port),
                HIVEMIND_BRIDGE_BIND="127.0.0.1",
                HIVEMIND_BRIDGE_SECRET=WORKER_SECRET,
                HIVEMIND_PAYLOAD_MAX_BYTES=str(BRIDGE_MAX_PAYLOAD_BYTES),
                **bridge_intervals,
            ),
            self.tmp / "bridge.log",
        )

    @property
    def pool_address(self) -> str:
        return f"127.0.0.1:{self.pool_port}"

    def start_pool(self) -> None:
        self.pool.start()
        wait_for(lambda: serving(self.pool_address), timeout=30, what="the Node Pool process serving")

    def start_bridge(self) -> None:
        self.bridge.start()
        wait_for(lambda: serving(f"127.0.0.1:{self.bridge_port}"), timeout=30, what="the bridge process serving")

    def cli(self, *args: str, user: str = OWNER, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "hivemind.cli", *args],
            cwd=ROOT,
            env=self._cli_env(user),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def _cli_env(self, user: str) -> dict[str, str]:
        return _clean_env(
            HIVEMIND_NODEPOOL_ADDRESS=self.pool_address,
            HIVEMIND_USERNAME=user,
            HIVEMIND_PASSWORD=PASSWORD,
            HIVEMIND_NODEPOOL_DB=str(self.db),
            COLUMNS="200",
        )

    def cli_popen(self, *args: str, user: str = OWNER) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "hivemind.cli", *args],
            cwd=ROOT,
            env=self._cli_env(user),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def cli_ok(self, *args: str, user: str = OWNER, timeout: float = 120) -> str:
        done = self.cli(*args, user=user, timeout=timeout)
        assert done.returncode == 0, f"hivemind {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def balance(self, user: str) -> int:
        return int(self.cli_ok("balance", user=user).split()[0])

    def row(self, sql: str, *params: object) -> sqlite3.Row | None:
        """Read the pool's database (read-only, as an observer)."""
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            return conn.execute(sql, params).fetchone()
        finally:
            conn.close()

    def task(self, task_id: str) -> sqlite3.Row | None:
        return self.row("SELECT status, message, node_id, attempts, result_at FROM tasks WHERE task_id = ?", task_id)

    def node_idle(self) -> bool:
        row = self.row("SELECT status FROM nodes WHERE node_id = ?", SITE)
        return row is not None and row["status"] == "Idle"

    def bridge_lines_about(self, task_id: str) -> list[dict]:
        return [r for r in self.bridge.log_records() if r.get("task_id") == task_id]

    def stop(self) -> None:
        self.bridge.stop()
        self.pool.stop()


def start_site(tmp: Path, redis_url: str, start_worker) -> Site:  # noqa: ANN001 - conftest factory
    site = Site(tmp, redis_url)
    site.cli_ok("users", "add", OWNER, "--password", PASSWORD, "--balance", "1000000")
    site.cli_ok("users", "add", SITE, "--password", PASSWORD)
    # One CPU offered: a second 1-core task finds the site full (test_full_site...).
    site.cpu_worker = start_worker("cpu", concurrency=1, HIVEMIND_CAPACITY_CPUS="1", HIVEMIND_SAMPLE_INTERVAL="0.5")
    site.start_pool()
    site.start_bridge()
    wait_for(site.node_idle, timeout=60, what="the bridge registered and Idle on the pool")
    return site


def write_zip(tmp: Path, files: dict[str, str | bytes]) -> Path:
    path = tmp / f"task-{uuid.uuid4().hex[:8]}.zip"
    path.write_bytes(make_zip(files))
    return path


def submit(site: Site, path: Path, *options: str) -> str:
    task_id = f"e2e-{uuid.uuid4().hex[:12]}"
    out = site.cli_ok("submit", str(path), "--task-id", task_id, "--json", *options)
    assert json.loads(out)["task_id"] == task_id
    return task_id


def wait_status(site: Site, task_id: str, wanted: set[str], timeout: float = 120) -> str:
    wait_for(
        lambda: (site.task(task_id) or {"status": ""})["status"] in wanted,
        timeout=timeout,
        what=f"{task_id} to reach {wanted} (now {site.task(task_id)!r})",
    )
    return site.task(task_id)["status"]


def fetch_result(site: Site, task_id: str, tmp: Path) -> zipfile.ZipFile:
    target = tmp / f"{task_id}.zip"
    site.cli_ok("result", task_id, "-o", str(target))
    return zipfile.ZipFile(io.BytesIO(target.read_bytes()))


def expected_reward(report: dict) -> int:
    """What the pool owes for this report, computed here from the report alone (the pool
    caps the duration by its own wall time, which is longer for these tasks)."""
    usage = report["usage"]
    return compute_reward(
        report["duration_seconds"], usage["cpu_percent"], usage["memory_percent"], usage["gpu_percent"], POOL_POLICY
    )
