"""A whole site for the fault drills: our Node Pool (in this process), the bridge
(`python -m bridge`, a subprocess that can be SIGKILLed) and real `celery worker`
subprocesses running Docker tasks, all on one Redis.

Tasks go in the way a user sends them (UploadTask on the pool) and are counted
where they come out: the pool logs "result stored" for the first result of a
task and "duplicate result ignored" for any later upload, so `ResultCounter`
sees every TaskResultUpload the pool accepted. Used by tests/test_faults.py
(few repetitions) and bench/fault_drills.py (the figures in docs/RELIABILITY.md).
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import psutil

from nodepool.server import RunningPool
from proto import nodepool_pb2 as pb
from tests.nodepool_kit import PASSWORD, Client, add_user, make_zip, start_pool
from tests.services_kit import BUSYBOX_IMAGE, ROOT, WorkerProcess, worker_env

WORKER_SECRET = "fault-drill-worker-secret"
# Short limits so that a message held by a killed worker comes back quickly:
# hard limit 20 + 5 + 10 + 1 (frozen) = 36 s < visibility timeout 40 s (swept every 4 s).
FAST = {
    "HIVEMIND_MAX_TIMEOUT": "20",
    "HIVEMIND_DEFAULT_TIMEOUT": "20",
    "HIVEMIND_IMAGE_PULL_TIMEOUT": "5",
    "HIVEMIND_TIME_LIMIT_MARGIN": "10",
    "HIVEMIND_VISIBILITY_TIMEOUT": "40",
    "HIVEMIND_TASK_LOCK_TTL": "6",
    "HIVEMIND_MAX_FROZEN_SECONDS": "1",
    "HIVEMIND_REGISTRY_HEARTBEAT_INTERVAL": "1",
    "HIVEMIND_TASK_IMAGE": BUSYBOX_IMAGE,
}


class ResultCounter(logging.Handler):
    """Counts, per task, the result uploads our pool stored and ignored as duplicates."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.stored: dict[str, int] = defaultdict(int)
        self.duplicates: dict[str, int] = defaultdict(int)
        self.stored_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        task_id = getattr(record, "task_id", "")
        message = record.getMessage()
        with self._lock:
            if message.startswith("result stored"):
                self.stored[task_id] += 1
                self.stored_at.setdefault(task_id, time.monotonic())
            elif message.startswith("duplicate result ignored"):
                self.duplicates[task_id] += 1

    def uploads(self, task_id: str) -> int:
        return self.stored.get(task_id, 0) + self.duplicates.get(task_id, 0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def task_zip(task_id: str, seconds: float) -> bytes:
    return make_zip({"run.sh": f"echo start {task_id}\nsleep {seconds}\necho done {task_id}\n"})


def kill_tree(pid: int) -> int:
    """SIGKILL a process and all its descendants at once (a lost host); how many."""
    try:
        main = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return 0
    procs = [main, *main.children(recursive=True)]
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)
    return len(procs)


class Site:
    def __init__(self, redis_url: str, workdir: Path, **env: str) -> None:
        self.redis_url = redis_url
        self.workdir = workdir
        self.env = {**FAST, **env}
        self.counter = ResultCounter()
        self.pool: RunningPool | None = None
        self.pool_port = 0
        self.bridge: subprocess.Popen | None = None
        self.bridge_port = free_port()
        self.workers: list[WorkerProcess] = []
        self._bridge_logs = 0
        self._pool_logger = logging.getLogger("hivemind.nodepool")

    # -- the pool -----------------------------------------------------------
    def start_pool(self) -> None:
        first = self.pool_port == 0
        self.pool = start_pool(self.workdir, port=self.pool_port, worker_secret=WORKER_SECRET)
        self.pool_port = self.pool.port
        if first:
            add_user(self.pool, "owner", balance=1_000_000)
            add_user(self.pool, "site1")
            self._pool_logger.setLevel(logging.INFO)
            self._pool_logger.addHandler(self.counter)
        self.client = Client(self.pool.address)
        self.token = self.client.login("owner")

    def stop_pool(self) -> None:
        if self.pool is not None:
            self.client.close()
            self.pool.stop(grace=0)
            self.pool = None

    # -- the bridge ---------------------------------------------------------
    def start_bridge(self) -> None:
        env = worker_env(self.redis_url, "bridge", **self.env)
        env.update(
            HIVEMIND_USERNAME="site1",
            HIVEMIND_PASSWORD=PASSWORD,
            HIVEMIND_NODEPOOL_ADDRESS=f"localhost:{self.pool_port}",
            HIVEMIND_BRIDGE_PORT=str(self.bridge_port),
            HIVEMIND_BRIDGE_BIND="127.0.0.1",
            HIVEMIND_BRIDGE_SECRET=WORKER_SECRET,
            HIVEMIND_HEARTBEAT_INTERVAL="0.5",
            HIVEMIND_REGISTRATION_INTERVAL="1",
            HIVEMIND_RELAY_INTERVAL="0.2",
        )
        self._bridge_logs += 1
        log = open(self.workdir / f"bridge-{self._bridge_logs}.log", "wb")
        self.bridge = subprocess.Popen([sys.executable, "-m", "bridge"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def kill_bridge(self) -> None:
        if self.bridge is not None:
            kill_tree(self.bridge.pid)
            self.bridge.wait(10)
            self.bridge = None

    def bridge_log(self) -> str:
        return (self.workdir / f"bridge-{self._bridge_logs}.log").read_text(errors="replace")[-20000:]

    # -- workers --------------------------------------------------------------
    def start_worker(self, app, concurrency: int = 2, **env: str) -> WorkerProcess:  # type: ignore[no-untyped-def]
        worker_id = f"fault-{uuid.uuid4().hex[:6]}"
        log_path = self.workdir / f"{worker_id}.log"
        values = {"HIVEMIND_CAPACITY_CPUS": "8", "HIVEMIND_IMAGE_PULL_TIMEOUT": "5", **self.env, **env}
        worker = WorkerProcess(self.redis_url, "cpu", log_path, concurrency, worker_id=worker_id, **values)
        self.workers.append(worker)
        worker.wait_ready(app, timeout=90)
        return worker

    def kill_worker(self, worker: WorkerProcess) -> int:
        killed = kill_tree(worker.proc.pid)
        worker.proc.wait(10)
        return killed

    # -- tasks ----------------------------------------------------------------
    def submit(self, count: int, seconds: float, prefix: str = "t") -> list[str]:
        ids = []
        for _ in range(count):
            task_id = f"{prefix}-{uuid.uuid4().hex[:10]}"
            reply = self.client.master.UploadTask(
                pb.UploadTaskRequest(
                    task_id=task_id, task_zip=task_zip(task_id, seconds), memory_gb=1, cpu_score=100, token=self.token
                )
            )
            assert reply.success, reply.message
            ids.append(task_id)
        return ids

    def statuses(self) -> dict[str, pb.TaskInfo]:
        reply = self.client.master.GetAllUserTasks(pb.GetAllUserTasksRequest(token=self.token))
        return {task.task_id: task for task in reply.tasks}

    def wait_status(self, ids: list[str], wanted: set[str], timeout: float) -> dict[str, pb.TaskInfo]:
        deadline = time.monotonic() + timeout
        while True:
            now = self.statuses()
            if all(task_id in now and now[task_id].status in wanted for task_id in ids):
                return now
            if time.monotonic() > deadline:
                left = {t: now[t].status if t in now else "?" for t in ids}
                raise AssertionError(f"tasks not {sorted(wanted)} after {timeout}s: {left}")
            time.sleep(0.2)

    def wait_results(self, ids: list[str], timeout: float) -> float:
        """Wait until the pool stored a result for every task; when the last came."""
        deadline = time.monotonic() + timeout
        while not all(self.counter.stored.get(task_id) for task_id in ids):
            if time.monotonic() > deadline:
                missing = [task_id for task_id in ids if not self.counter.stored.get(task_id)]
                raise AssertionError(f"no result after {timeout}s for {missing}\n{self.bridge_log()[-3000:]}")
            time.sleep(0.1)
        return max(self.counter.stored_at[task_id] for task_id in ids)

    def containers(self, docker_client, worker_id: str) -> list:  # type: ignore[no-untyped-def]
        return docker_client.containers.list(all=True, filters={"label": [f"hivemind.worker={worker_id}"]}, ignore_removed=True)

    def close(self) -> None:
        self.kill_bridge()
        for worker in self.workers:
            worker.stop()
        self.stop_pool()
        self._pool_logger.removeHandler(self.counter)


class RedisServer:
    """A redis-server of the drill's own with append-only persistence, to restart."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.dir = workdir / f"redis-{port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.url = f"redis://127.0.0.1:{port}"

    def start(self) -> None:
        subprocess.run(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--databases",
                "4",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--dir",
                str(self.dir),
                "--daemonize",
                "yes",
                "--pidfile",
                str(self.dir / "redis.pid"),
            ],
            check=True,
        )
        wait_until(self._answers, 10, f"redis on {self.port}")

    def _answers(self) -> bool:
        return subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True).stdout.strip() == b"PONG"

    def stop(self) -> None:
        """A clean shutdown: Redis writes the append-only file and exits."""
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown"], capture_output=True)
        wait_until(lambda: not self._answers(), 10, f"redis on {self.port} to stop")


class SecondDockerd:
    """A dockerd of the drill's own (its own socket, data and exec roots), so that
    restarting it disturbs nobody else's containers."""

    def __init__(self, root: Path = Path("/tmp/hm-d2")) -> None:
        self.root = root
        self.host = f"unix://{root}/docker.sock"

    # A bridge of its own: with `--bridge none` dockerd deletes docker0, the
    # default bridge of the machine's main dockerd, and breaks its networked tasks.
    BRIDGE, BRIDGE_ADDRESS = "hm-d2br", "10.231.254.1/24"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if subprocess.run(["ip", "link", "show", self.BRIDGE], capture_output=True).returncode:
            subprocess.run(["ip", "link", "add", self.BRIDGE, "type", "bridge"], check=True)
            subprocess.run(["ip", "addr", "add", self.BRIDGE_ADDRESS, "dev", self.BRIDGE], check=True)
            subprocess.run(["ip", "link", "set", self.BRIDGE, "up"], check=True)
        log = open(self.root / "dockerd.log", "ab")
        subprocess.Popen(
            [
                "dockerd",
                "--host",
                self.host,
                "--data-root",
                str(self.root / "root"),
                "--exec-root",
                str(self.root / "exec"),
                "--pidfile",
                str(self.root / "pid"),
                "--bridge",
                self.BRIDGE,
                "--iptables=false",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_until(self.answers, 60, "the second dockerd")

    def answers(self) -> bool:
        return subprocess.run(["docker", "-H", self.host, "version"], capture_output=True).returncode == 0

    def pid(self) -> int | None:
        try:
            return int((self.root / "pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        pid = self.pid()
        if pid is None or not psutil.pid_exists(pid):
            return
        proc = psutil.Process(pid)
        proc.terminate()
        proc.wait(60)

    def ensure_image(self, image: str) -> None:
        if subprocess.run(["docker", "-H", self.host, "image", "inspect", image], capture_output=True).returncode:
            save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
            subprocess.run(["docker", "-H", self.host, "load"], stdin=save.stdout, check=True, capture_output=True)
            save.wait()


def wait_until(predicate, timeout: float, what: str, poll: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
