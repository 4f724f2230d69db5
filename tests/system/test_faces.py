"""The bridge is a Celery client, not a worker; every package face offers what it lists.

What a process loads is read from `sys.modules` of a fresh interpreter (a
subprocess), since this test process has long imported the worker.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Nothing of the worker's side may be loaded by the bridge: the worker app and its
# parts, usage measuring, runtimes, and what they bring (psutil, Docker, Prometheus).
WORKER_SIDE = (
    "hivemind_celery.celery_app",
    "hivemind_celery.worker",
    "hivemind_celery.usage",
    "hivemind_celery.runtime",
    "hivemind_celery.task.celery_task",
    "hivemind_celery.task.run",
    "psutil",
    "docker",
    "prometheus_client",
)
PACKAGES = ("core", "usage", "observability", "payloads", "runtime", "site", "task", "worker")


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code`."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return set(json.loads(run.stdout.strip().splitlines()[-1]))


def worker_side(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == w or m.startswith(w + ".") for w in WORKER_SIDE))


def test_importing_the_bridge_loads_nothing_of_the_worker() -> None:
    loaded = loaded_after("import bridge, bridge.server, bridge.__main__")
    assert "hivemind_celery.client" in loaded and "hivemind_celery.site.registry" in loaded  # it did load the bridge
    assert worker_side(loaded) == []


@pytest.mark.redis
def test_a_started_bridge_loads_nothing_of_the_worker(redis_url: str) -> None:
    """Started against the test Redis; the Node Pool address answers nothing, so the
    heartbeat only retries while the relay watches the result backend."""
    loaded = loaded_after(f"""
from hivemind_celery.core import Settings
from bridge.server import Bridge
bridge = Bridge(Settings(redis_url={redis_url!r}, username="faces-site", password="pw", bridge_port=0,
                         bridge_bind="127.0.0.1", nodepool_address="127.0.0.1:9")).start()
assert bridge.celery.backend.client.ping()
bridge.relay.relay_once()
bridge.stop(grace=0)
""")
    assert "celery.backends.redis" in loaded  # the client reached the result backend
    assert worker_side(loaded) == []


def test_the_worker_app_is_found_as_celery_finds_it() -> None:
    """`celery -A hivemind_celery worker` takes `hivemind_celery.app` (or `.celery`): the
    worker app, with the task registered and the worker's steps added."""
    loaded = loaded_after("""
import hivemind_celery
from hivemind_celery.core import TASK_NAME
from hivemind_celery.worker import WORKER_STEPS
app = hivemind_celery.app
assert hivemind_celery.celery is app
assert TASK_NAME in app.tasks, sorted(app.tasks)
assert set(WORKER_STEPS) <= set(app.steps["worker"])
""")
    assert "hivemind_celery.worker" in loaded


def test_the_client_is_built_without_the_worker() -> None:
    loaded = loaded_after("""
from celery import signals
from hivemind_celery.client import create_client
from hivemind_celery.core import TASK_NAME, Settings
client = create_client(Settings())
assert TASK_NAME not in client.tasks
assert not signals.worker_init.receivers and not signals.task_revoked.receivers
assert client.conf.task_acks_late and client.conf.task_create_missing_queues is False
""")
    assert worker_side(loaded) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_each_face_offers_every_name_it_lists(package: str) -> None:
    face = importlib.import_module(f"hivemind_celery.{package}")
    missing = [name for name in face.__all__ if not hasattr(face, name)]
    assert face.__all__ and missing == []
