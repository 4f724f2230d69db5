"""A site paused by the owner's preferences, as the Node Pool sees it through the
bridge: ReportStatus is "Paused: <reason>" (never "Idle"), ExecuteTask is refused
with the reason, the registered totals do not change; resume makes it Idle again.

Real Redis and the bridge's real gRPC server; the Node Pool is the bridge tests'
RecordingPool on loopback, the worker's registration and mode are written with the
worker's own code (Registry, PrefsStore)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from bridge.server import Bridge
from hivemind_celery.core.prefs import RUNNING, SiteMode
from hivemind_celery.site.prefs import PrefsStore
from tests.bridge_kit import RecordingPool, add_worker, execute, wait_for

pytestmark = pytest.mark.redis

PAUSED_DB = 63


@pytest.fixture(scope="module")
def redis_url(redis_base: str) -> str:
    return f"{redis_base}/{PAUSED_DB}"


def test_paused_site_reports_paused_refuses_work_and_keeps_its_registration(
    start_bridge: Callable[..., Bridge], db: redis.Redis, pool: RecordingPool
) -> None:
    add_worker(db, cpus=4, memory_mb=8192)
    start_bridge()
    wait_for(lambda: pool.of("ReportStatus") and pool.of("ReportStatus")[-1].status == "Idle", "Idle first")
    registered = pool.of("RegisterWorkerNode")[-1]
    prefs = PrefsStore(db)
    prefs.publish_worker_mode("w1", SiteMode(state="paused", reason="outside the hours 22:00-07:00"))
    wait_for(lambda: pool.of("ReportStatus")[-1].status == "Paused: outside the hours 22:00-07:00", "the Paused status")
    seen = len(pool.of("RegisterWorkerNode"))
    wait_for(lambda: len(pool.of("RegisterWorkerNode")) > seen, "a registration while paused")
    last = pool.of("RegisterWorkerNode")[-1]
    assert (last.cpu_cores, last.memory_gb, last.cpu_score) == (registered.cpu_cores, registered.memory_gb, registered.cpu_score)
    prefs.publish_worker_mode("w1", RUNNING)
    wait_for(lambda: pool.of("ReportStatus")[-1].status == "Idle", "Idle again after resume")


def test_paused_site_refuses_execute_task_with_the_reason(start_bridge: Callable[..., Bridge], db: redis.Redis) -> None:
    add_worker(db)
    bridge = start_bridge()
    PrefsStore(db).publish_worker_mode("w1", SiteMode(state="paused", reason="paused by the owner until 14:00"))
    reply = execute(bridge, "t-while-paused")
    assert not reply.success
    assert "the site is paused: paused by the owner until 14:00" in reply.message
    assert not bridge.outbox.owes("t-while-paused")
