"""Shared fixtures: a real Redis, a real dockerd and real Celery workers.

Without Redis or Docker the tests that need them skip, naming the reason;
with HIVEMIND_REQUIRE_SERVICES=1 (set by `make test` and CI) they fail
instead, so a green run always means they ran.

Only fixtures live here (each test package's conftest.py adds its own); what tests
import (paths, images, zips, the worker subprocess) is in tests/services_kit.py.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import redis

from tests.services_kit import BUSYBOX_IMAGE, PYTHON_IMAGE, REDIS_BASE, REQUIRE, WorkerProcess, missing

# DB 0 is left for people; each test module that asks gets its own DB (the
# test Redis runs with --databases 64), so modules never see each other's keys.
_db_numbers = itertools.count(16)


@pytest.fixture(scope="session")
def redis_base() -> str:
    try:
        redis.Redis.from_url(REDIS_BASE + "/0", socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        missing(f"Redis not reachable at {REDIS_BASE}: {exc}")
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
        missing(f"dockerd not reachable: {exc}")
    for image in (BUSYBOX_IMAGE, PYTHON_IMAGE):
        try:
            client.images.get(image)
        except Exception:  # noqa: BLE001
            missing(f"task image {image} missing: run scripts/build-images.sh")
    return client


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

    def start(queues: str = "cpu", concurrency: int = 2, extra_args: tuple[str, ...] = (), **env: str) -> WorkerProcess:
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
