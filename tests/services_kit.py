"""What every test package shares: the checkout's root, the real services the tests
run against (Redis, dockerd and its task images, a `celery worker` subprocess), the
skip-or-fail rule when one is missing, and task zips.

Fixtures built on these live in tests/conftest.py; test modules import from here.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REDIS_BASE = os.environ.get("HIVEMIND_TEST_REDIS", "redis://localhost:6379")
REQUIRE = os.environ.get("HIVEMIND_REQUIRE_SERVICES") == "1"
BUSYBOX_IMAGE = os.environ.get("HIVEMIND_BUSYBOX_IMAGE", "hivemind-busybox:latest")
PYTHON_IMAGE = os.environ.get("HIVEMIND_TASK_IMAGE", "hivemind-task-python:bookworm")
MISSING_IMAGE = "hivemind-no-such-image:1"  # allowed in tests, present nowhere


def missing(what: str) -> None:
    """A service the test needs is not here: skip, or fail under HIVEMIND_REQUIRE_SERVICES=1."""
    if REQUIRE:
        pytest.fail(f"{what} (HIVEMIND_REQUIRE_SERVICES=1: this must not skip)")
    pytest.skip(what)


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
        found = (
            docker_client.containers.list(all=True, filters=filters, sparse=True),
            docker_client.volumes.list(filters=filters),
        )
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

    def __init__(
        self, redis_url: str, queues: str, log_path: Path, concurrency: int = 2, extra_args: tuple[str, ...] = (), **env: str
    ) -> None:
        self.worker_id = env.pop("worker_id", f"test-{uuid.uuid4().hex[:8]}")
        self.hostname = f"{self.worker_id}@localhost"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "hivemind_celery",
                "worker",
                "-Q",
                queues,
                "-c",
                str(concurrency),
                "--pool",
                "prefork",
                "-n",
                self.hostname,
                "--without-heartbeat",
                "--without-mingle",
                "--without-gossip",
                "-l",
                "INFO",
                *extra_args,
            ],
            cwd=ROOT,
            env=worker_env(redis_url, self.worker_id, **env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
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
