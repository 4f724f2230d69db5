"""A whole worker site behind the home router of tests/vpn/netns_kit.py, and our Node
Pool on the internet side, all real processes:

- pool namespace: `python -m nodepool` (gRPC on 198.18.0.1:50051; with the VPN hub
  and its join API on :8088 when asked), and the owner's CLI;
- volunteer namespace: the site's own Redis (on the namespace's loopback), a Celery
  worker (its tasks run in Docker: the docker socket is a unix socket, reachable from
  any network namespace) and the bridge (`python -m bridge`).

Everything of the site sits behind the NAT router, as a volunteer's machine does;
the test process only starts processes and reads the pool's database file.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path

from nodepool.accounts import create_user
from nodepool.store import Store
from tests.nodepool_kit import PASSWORD, wait_for
from tests.services_kit import BUSYBOX_IMAGE, PYTHON_IMAGE, ROOT, make_zip
from tests.vpn.netns_kit import POOL_WAN, HomeInternet

OWNER = "owner"
SITE = "site1"
POOL_PORT = 50051
JOIN_PORT = 8088
BRIDGE_PORT = 50053
REDIS_PORT = 6390
HUB_PORT = 51820
METRICS_PORT = 9877  # the bridge's tunnel metrics, on the volunteer namespace's loopback


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVEMIND_") and k != "REDIS_URL"}
    env.update({"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "HIVEMIND_LOG_JSON": "1", "COLUMNS": "200", **extra})
    return env


class NsProc:
    def __init__(self, ns: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.ns, self.argv, self.env, self.log_path = ns, argv, env, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> NsProc:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, *self.argv], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_logged(self, marker: str, timeout: float, what: str) -> None:
        """Wait until the log shows `marker`; fail with the log and the process's state as they
        are then (not as they were when the wait began)."""
        try:
            wait_for(lambda: marker in self.log(), timeout=timeout, what=what)
        except AssertionError:
            state = (
                "running" if self.proc is not None and self.proc.poll() is None else f"exited {self.proc and self.proc.poll()}"
            )
            raise AssertionError(f"timed out waiting for {what} ({state}; log tail: {self.log()[-1500:]!r})") from None

    def records(self) -> list[dict]:
        found = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    pass
        return found


class TunnelSite:
    def __init__(
        self,
        net: HomeInternet,
        tmp: Path,
        *,
        tunnel: bool,
        check_interval: float = 1.0,
        deployed_join_url: str | None = None,
        bridge_env: dict[str, str] | None = None,
    ) -> None:
        """deployed_join_url: join the (stand-in) deployed network there instead of our pool's hub,
        whose VPN is then off."""
        self.net, self.tmp = net, tmp
        self.db = tmp / "pool.db"
        self.state_dir = tmp / "tunnel-state"
        self.redis_url = f"redis://127.0.0.1:{REDIS_PORT}/0"
        self.interface = f"hmvpn{net.tag}"
        self.hub_interface = f"hmpool{net.tag}"
        self.redis = NsProc(
            net.volunteer,
            ["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            os.environ.copy(),
            tmp / "redis.log",
        )
        self.pool = NsProc(
            net.pool,
            [sys.executable, "-m", "nodepool"],
            clean_env(
                HIVEMIND_NODEPOOL_DB=str(self.db),
                HIVEMIND_NODEPOOL_PORT=str(POOL_PORT),
                HIVEMIND_NODEPOOL_HOST="0.0.0.0",
                HIVEMIND_NODEPOOL_DISPATCH_INTERVAL_S="0.2",
                HIVEMIND_NODEPOOL_NODE_BACKOFF_S="1",
                HIVEMIND_NODEPOOL_VPN="0" if deployed_join_url else "1",
                HIVEMIND_NODEPOOL_VPN_ENDPOINT=f"{POOL_WAN}:{HUB_PORT}",
                HIVEMIND_NODEPOOL_VPN_INTERFACE=self.hub_interface,
                HIVEMIND_NODEPOOL_VPN_USERSPACE="userspace",
                HIVEMIND_NODEPOOL_VPN_API_PORT=str(JOIN_PORT),
                HIVEMIND_NODEPOOL_VPN_NETWORK="10.88.0.0/24",
            ),
            tmp / "pool.log",
        )
        worker_id = f"vol-{uuid.uuid4().hex[:6]}"
        self.worker = NsProc(
            net.volunteer,
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "hivemind_celery",
                "worker",
                "-Q",
                "cpu",
                "-c",
                "1",
                "--pool",
                "prefork",
                "-n",
                f"{worker_id}@volunteer",
                "--without-heartbeat",
                "--without-mingle",
                "--without-gossip",
                "-l",
                "INFO",
            ],
            clean_env(
                REDIS_URL=self.redis_url,
                HIVEMIND_WORKER_ID=worker_id,
                HIVEMIND_TASK_IMAGE=PYTHON_IMAGE,
                HIVEMIND_ALLOWED_IMAGES=BUSYBOX_IMAGE,
                HIVEMIND_IMAGE_PULL_TIMEOUT="10",
                HIVEMIND_LOG_JSON="0",
                HIVEMIND_CAPACITY_CPUS="1",
                HIVEMIND_SAMPLE_INTERVAL="0.5",
            ),
            tmp / "worker.log",
        )
        tunnel_env = (
            dict(
                HIVEMIND_TUNNEL="1",
                HIVEMIND_TUNNEL_JOIN_MODE="deployed" if deployed_join_url else "own",
                HIVEMIND_TUNNEL_JOIN_URL=deployed_join_url or f"http://{POOL_WAN}:{JOIN_PORT}/api/vpn/join",
                HIVEMIND_TUNNEL_STATE_DIR=str(self.state_dir),
                HIVEMIND_TUNNEL_INTERFACE=self.interface,
                HIVEMIND_TUNNEL_CHECK_INTERVAL=str(check_interval),
                HIVEMIND_TUNNEL_METRICS_PORT=str(METRICS_PORT),
            )
            if tunnel
            else {}
        )
        self.bridge = NsProc(
            net.volunteer,
            [sys.executable, "-m", "bridge"],
            clean_env(
                REDIS_URL=self.redis_url,
                HIVEMIND_NODEPOOL_ADDRESS=f"{POOL_WAN}:{POOL_PORT}",
                HIVEMIND_USERNAME=SITE,
                HIVEMIND_PASSWORD=PASSWORD,
                HIVEMIND_BRIDGE_PORT=str(BRIDGE_PORT),
                HIVEMIND_HEARTBEAT_INTERVAL="0.3",
                HIVEMIND_REGISTRATION_INTERVAL="0.5",
                HIVEMIND_RELAY_INTERVAL="0.2",
                **tunnel_env,
                **(bridge_env or {}),
            ),
            tmp / "bridge.log",
        )

    # -- life -----------------------------------------------------------------------------
    def start(self) -> TunnelSite:
        store = Store(self.db)
        try:
            create_user(store, OWNER, PASSWORD, 1_000_000)
            create_user(store, SITE, PASSWORD)
        finally:
            store.close()
        self.redis.start()
        wait_for(
            lambda: (
                self.net.in_ns(self.net.volunteer, "redis-cli", "-p", str(REDIS_PORT), "ping", check=False).stdout.strip()
                == "PONG"
            ),
            timeout=20,
            what="the site's Redis",
        )
        self.pool.start()
        self.pool.wait_logged("Node Pool serving", timeout=120, what="the Node Pool serving")
        self.worker.start()
        self.worker.wait_logged(" ready.", timeout=90, what="the Celery worker ready")
        self.bridge.start()
        return self

    def stop(self) -> None:
        for proc in (self.bridge, self.worker, self.pool, self.redis):
            proc.stop()

    # -- the pool's side ------------------------------------------------------------------------
    def row(self, sql: str, *params: object) -> sqlite3.Row | None:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            return conn.execute(sql, params).fetchone()
        finally:
            conn.close()

    def node(self) -> sqlite3.Row | None:
        return self.row("SELECT hostname, port, status FROM nodes WHERE node_id = ?", SITE)

    def task(self, task_id: str) -> sqlite3.Row | None:
        return self.row("SELECT status, message, node_id, attempts, result_at FROM tasks WHERE task_id = ?", task_id)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = clean_env(HIVEMIND_NODEPOOL_ADDRESS=f"127.0.0.1:{POOL_PORT}", HIVEMIND_USERNAME=OWNER, HIVEMIND_PASSWORD=PASSWORD)
        return subprocess.run(
            ["ip", "netns", "exec", self.net.pool, sys.executable, "-m", "hivemind.cli", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def submit(self, files: dict[str, str | bytes]) -> str:
        path = self.tmp / f"task-{uuid.uuid4().hex[:8]}.zip"
        path.write_bytes(make_zip(files))
        task_id = f"vpn-{uuid.uuid4().hex[:12]}"
        done = self.cli("submit", str(path), "--task-id", task_id, "--json")
        assert done.returncode == 0, done.stderr
        return task_id

    def wait_status(self, task_id: str, wanted: set[str], timeout: float = 180) -> str:
        wait_for(
            lambda: (self.task(task_id) or {"status": ""})["status"] in wanted,
            timeout=timeout,
            what=f"{task_id} to reach {wanted} (now {dict(self.task(task_id) or {})!r})",
        )
        return str(self.task(task_id)["status"])  # type: ignore[index]

    def result(self, task_id: str) -> zipfile.ZipFile:
        target = self.tmp / f"{task_id}.zip"
        done = self.cli("result", task_id, "-o", str(target))
        assert done.returncode == 0, done.stderr
        return zipfile.ZipFile(io.BytesIO(target.read_bytes()))

    def standing(self) -> dict[str, str]:
        """The bridge's standing hash in the site's Redis (what the console's Overview shows)."""
        out = self.net.in_ns(
            self.net.volunteer, "redis-cli", "-p", str(REDIS_PORT), "--raw", "hgetall", "hm:bridge:status"
        ).stdout.splitlines()
        return dict(zip(out[::2], out[1::2]))

    def metrics(self) -> str:
        return self.net.in_ns(
            self.net.volunteer,
            sys.executable,
            "-c",
            "import urllib.request, sys; "
            f"sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:{METRICS_PORT}/metrics', "
            "timeout=5).read().decode())",
        ).stdout

    def wait_registered(self, hostname: str, timeout: float = 90) -> None:
        def registered() -> bool:
            node = self.node()
            return node is not None and node["hostname"] == hostname and node["status"] == "Idle"

        wait_for(
            registered,
            timeout=timeout,
            what=f"the site registered as {hostname} and Idle "
            f"(now {dict(self.node() or {})!r}; bridge log tail {self.bridge.log()[-1500:]!r})",
        )


def wait_until(predicate, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
