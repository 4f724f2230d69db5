"""Fault drills, few repetitions each (the figures in docs/RELIABILITY.md come from
`make reliability`, which runs the same drills many times): a whole worker
SIGKILLed mid-task, the bridge SIGKILLed and restarted, Redis restarted with
append-only persistence, the Node Pool down while tasks finish, dockerd
restarted under a task, and a worker's disk nearly full.

Everything is real: our Node Pool, `python -m bridge`, `celery worker`
subprocesses, Docker containers and Redis servers (one of the drill's own for
the restart, port 6410 by default; a dockerd of its own for the dockerd restart).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import redis

from hivemind_celery.celery_app import create_app
from hivemind_celery.core.settings import Settings
from hivemind_celery.site.registry import Registry
from tests import fault_drills as drills
from tests.fault_kit import BUSYBOX_IMAGE, RedisServer, SecondDockerd, Site

pytestmark = [pytest.mark.redis, pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(600)]

REPS = int(os.environ.get("HIVEMIND_FAULT_REPS", "2"))
RESTART_REDIS_PORT = int(os.environ.get("HIVEMIND_FAULT_REDIS_PORT", "6410"))


@pytest.fixture
def make_site(tmp_path: Path, docker_client) -> Iterator[Callable[..., tuple[Site, object]]]:  # type: ignore[no-untyped-def]
    sites: list[tuple[Site, object]] = []

    def make(redis_url: str, bridge: bool = True, **env: str) -> tuple[Site, object]:
        redis.Redis.from_url(redis_url).flushdb()
        site = Site(redis_url, tmp_path, **env)
        app = create_app(Settings(redis_url=redis_url))
        sites.append((site, app))
        site.start_pool()
        if bridge:
            site.start_bridge()
        return site, app

    yield make
    for site, app in sites:
        site.close()
        app.close()  # type: ignore[attr-defined]


def _check(drill: drills.Drill) -> None:
    assert drill.completed == len(drill.tasks), drill
    assert drill.exactly_once == len(drill.tasks), drill


def test_whole_worker_sigkilled_mid_task(make_site, redis_url: str, docker_client) -> None:  # type: ignore[no-untyped-def]
    site, app = make_site(redis_url)
    drill = drills.worker_killed(site, app, docker_client, tasks=REPS)
    _check(drill)
    assert drill.notes["processes_killed"] >= 2  # the main process and its pool children
    assert drill.notes["orphans_after_kill"] == REPS, "the containers outlive a killed worker"
    assert drill.notes["orphans_left"] == 0, "the rerun removed the dead worker's containers"


def test_dead_workers_tasks_come_back_long_before_the_visibility_timeout(
    make_site,
    redis_url: str,  # type: ignore[no-untyped-def]
    docker_client,
) -> None:
    """With an hour's visibility timeout, only the rescue (rescue.py) can bring
    the killed worker's tasks back within the test's few minutes."""
    site, app = make_site(redis_url, HIVEMIND_VISIBILITY_TIMEOUT="3600", HIVEMIND_RESCUE_INTERVAL="2")
    drill = drills.worker_killed(site, app, docker_client, tasks=REPS)
    _check(drill)
    assert drill.recover_s < 120, drill
    assert drill.notes["orphans_left"] == 0, "the rerun removed the dead worker's containers"


def test_bridge_sigkilled_and_restarted(make_site, redis_url: str) -> None:  # type: ignore[no-untyped-def]
    site, app = make_site(redis_url)
    site.start_worker(app, concurrency=REPS)
    _check(drills.bridge_killed(site, app, tasks=REPS))


def test_redis_restarted_mid_run(make_site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = RedisServer(RESTART_REDIS_PORT, tmp_path)
    server.start()
    try:
        site, app = make_site(server.url + "/0")
        site.start_worker(app, concurrency=REPS)
        _check(drills.redis_restarted(site, server, tasks=REPS))
        assert (server.dir / "appendonlydir").exists() or list(server.dir.glob("*.aof"))
    finally:
        server.stop()


def test_node_pool_down_while_tasks_finish(make_site, redis_url: str) -> None:  # type: ignore[no-untyped-def]
    site, app = make_site(redis_url)
    site.start_worker(app, concurrency=REPS)
    drill = drills.pool_down(site, app, tasks=REPS, outage_s=float(os.environ.get("HIVEMIND_FAULT_OUTAGE", "10")))
    _check(drill)
    assert drill.notes["finished_in_outage"], "the tasks finished while the pool was away"


@pytest.fixture
def second_dockerd() -> Iterator[SecondDockerd]:
    dockerd = SecondDockerd()
    started = not dockerd.answers()
    if started:
        try:
            dockerd.start()
        except (OSError, AssertionError, subprocess.CalledProcessError) as exc:
            pytest.skip(f"cannot run a second dockerd on this machine: {exc}")
    dockerd.ensure_image(BUSYBOX_IMAGE)
    yield dockerd
    if started:
        dockerd.stop()


def test_dockerd_restarted_under_a_task(make_site, redis_url: str, second_dockerd: SecondDockerd) -> None:  # type: ignore[no-untyped-def]
    site, app = make_site(redis_url)
    site.start_worker(app, concurrency=1, DOCKER_HOST=second_dockerd.host)
    drill = drills.dockerd_restarted(site, second_dockerd)
    assert drill.exactly_once == 2, drill
    # Failed with a reason, or recovered; never lost.
    assert drill.notes["victim_status"] in {"FAILED", "COMPLETED"}, drill
    if drill.notes["victim_status"] == "FAILED":
        # Either the worker lost dockerd mid-call, or dockerd's shutdown stopped the container.
        message = str(drill.notes["victim_message"])
        assert "dockerd" in message or "killed by SIG" in message, drill
    assert drill.notes["after_status"] == "COMPLETED", drill


def test_disk_nearly_full_threshold_makes_the_site_busy(make_site, redis_url: str) -> None:  # type: ignore[no-untyped-def]
    """The threshold set above the real free space: a nearly full disk without filling it."""
    site, app = make_site(redis_url)
    free_mb = psutil.disk_usage("/").free // (1024 * 1024)
    site.start_worker(app, concurrency=1, HIVEMIND_HEALTH_MIN_DISK_FREE_MB=str(free_mb + 100_000))
    registry = Registry(redis.Redis.from_url(redis_url))
    drills.wait_until(lambda: registry.capacity().workers == 1, 30, "the worker registered")
    assert registry.capacity().cpus_free == 0
    reply = drills.execute_direct(site, "disk-threshold-1")
    assert not reply.success and "disk nearly full" in reply.message, reply.message
    [task] = site.submit(1, seconds=1, prefix="dt")
    time.sleep(4)
    assert site.statuses()[task].status == "PENDING"  # not dispatched, not failed


def test_disk_filled_on_a_small_filesystem_pauses_then_resumes(make_site, redis_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    disk = tmp_path / "disk"
    if not drills.mount_tmpfs(disk, 32):
        pytest.skip("cannot mount a tmpfs here (needs root and mount)")
    try:
        site, app = make_site(redis_url)
        site.start_worker(app, concurrency=1, HIVEMIND_MONITOR_DISK_PATH=str(disk), HIVEMIND_HEALTH_MIN_DISK_FREE_MB="16")
        registry = Registry(redis.Redis.from_url(redis_url))
        drills.wait_until(lambda: registry.capacity().cpus_free > 0, 30, "the worker offering its CPUs")
        drill = drills.disk_filled(site, registry, disk, fill_mb=24)
        assert drill.notes["refused"] and "disk nearly full" in str(drill.notes["refusal"]), drill
        assert drill.notes["status_while_full"] == "PENDING", drill
        _check(drill)
    finally:
        drills.unmount(disk)
