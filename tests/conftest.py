"""Shared fixtures: a real Redis, a real dockerd and real Celery workers.

Without Redis or Docker the tests that need them skip, naming the reason;
with HIVEMIND_REQUIRE_SERVICES=1 (set by `make test` and CI) they fail
instead, so a green run always means they ran.
"""

from __future__ import annotations

import io
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parents[1]
REDIS_BASE = os.environ.get("HIVEMIND_TEST_REDIS", "redis://localhost:6379")
REQUIRE = os.environ.get("HIVEMIND_REQUIRE_SERVICES") == "1"
BUSYBOX_IMAGE = os.environ.get("HIVEMIND_BUSYBOX_IMAGE", "hivemind-busybox:latest")
PYTHON_IMAGE = os.environ.get("HIVEMIND_TASK_IMAGE", "hivemind-task-python:bookworm")
MISSING_IMAGE = "hivemind-no-such-image:1"  # allowed in tests, present nowhere

# DB 0 is left for people; each test module that asks gets its own DB (the
# test Redis runs with --databases 64), so modules never see each other's keys.
_db_numbers = itertools.count(16)


def _missing(what: str) -> None:
    if REQUIRE:
        pytest.fail(f"{what} (HIVEMIND_REQUIRE_SERVICES=1: this must not skip)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def redis_base() -> str:
    try:
        redis.Redis.from_url(REDIS_BASE + "/0", socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        _missing(f"Redis not reachable at {REDIS_BASE}: {exc}")
    return REDIS_BASE


@pytest.fixture(scope="module")
def redis_url(redis_base: str) -> str:
    """A Redis URL on a database of this module's own, emptied first."""
    url = f"{redis_base}/{next(_db_numbers)}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="module")
def redis_client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


@pytest.fixture(scope="session")
def docker_client():
    import docker

    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means no usable dockerd
        _missing(f"dockerd not reachable: {exc}")
    for image in (BUSYBOX_IMAGE, PYTHON_IMAGE):
        try:
            client.images.get(image)
        except Exception:  # noqa: BLE001
            _missing(f"task image {image} missing: run scripts/build-images.sh")
    return client


def docker_leftovers(docker_client, label: str, timeout: float = 10.0) -> tuple[list, list]:
    """Containers and volumes carrying `label` ("hivemind.task_id=..."), once
    they are gone or after `timeout`. A worker removes a finished task's
    containers just after storing its outcome (RunTask.after_return), so a
    client that has the outcome may look a moment too early."""
    filters = {"label": label}
    deadline = time.monotonic() + timeout
    while True:
        # sparse: no inspect per container, which fails with 404 for one removed
        # between the list and the inspect (the very removal being waited for).
        found = (docker_client.containers.list(all=True, filters=filters, sparse=True),
                 docker_client.volumes.list(filters=filters))
        if found == ([], []) or time.monotonic() >= deadline:
            return found
        time.sleep(0.1)


def make_zip(files: dict[str, str | bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buf.getvalue()


def worker_env(redis_url: str, worker_id: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVEMIND_")}
    env.update(
        REDIS_URL=redis_url,
        HIVEMIND_WORKER_ID=worker_id,
        HIVEMIND_TASK_IMAGE=PYTHON_IMAGE,
        HIVEMIND_ALLOWED_IMAGES=f"{BUSYBOX_IMAGE},{MISSING_IMAGE}",
        HIVEMIND_IMAGE_PULL_TIMEOUT="10",
        HIVEMIND_LOG_LEVEL="INFO",
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class WorkerProcess:
    """A real `celery -A hivemind_celery worker` subprocess."""

    def __init__(self, redis_url: str, queues: str, log_path: Path, concurrency: int = 2,
                 extra_args: tuple[str, ...] = (), **env: str) -> None:
        self.worker_id = env.pop("worker_id", f"test-{uuid.uuid4().hex[:8]}")
        self.hostname = f"{self.worker_id}@localhost"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "hivemind_celery", "worker", "-Q", queues,
             "-c", str(concurrency), "--pool", "prefork", "-n", self.hostname,
             "--without-heartbeat", "--without-mingle", "--without-gossip", "-l", "INFO", *extra_args],
            cwd=ROOT, env=worker_env(redis_url, self.worker_id, **env),
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, app, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log()}")
            replies = app.control.ping(destination=[self.hostname], timeout=1.0)
            if replies:
                return
        raise RuntimeError(f"worker not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-20000:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


@pytest.fixture(scope="module")
def celery_app(redis_url: str):
    """A client-side Celery app bound to this module's Redis database."""
    from hivemind_celery.celery_app import create_app
    from hivemind_celery.core.settings import Settings

    app = create_app(Settings(redis_url=redis_url))
    yield app
    app.close()


@pytest.fixture(scope="module")
def start_worker(redis_url: str, celery_app, docker_client, tmp_path_factory) -> Iterator:
    """Factory: start_worker(queues="cpu", extra_args=("--include", "mod"), **env) -> a ready
    WorkerProcess (extra_args go to `celery worker` as they are)."""
    started: list[WorkerProcess] = []

    def start(queues: str = "cpu", concurrency: int = 2, extra_args: tuple[str, ...] = (),
              **env: str) -> WorkerProcess:
        log_path = tmp_path_factory.mktemp("worker") / "worker.log"
        worker = WorkerProcess(redis_url, queues, log_path, concurrency, extra_args, **env)
        started.append(worker)
        worker.wait_ready(celery_app)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under HIVEMIND_REQUIRE_SERVICES=1 a skipped docker/redis test fails:
    CI must never pass by not running them."""
    outcome = yield
    report = outcome.get_result()
    if REQUIRE and report.skipped and (item.get_closest_marker("docker") or item.get_closest_marker("redis")):
        report.outcome = "failed"
        report.longrepr = f"skipped a docker/redis test under HIVEMIND_REQUIRE_SERVICES=1: {report.longrepr}"
