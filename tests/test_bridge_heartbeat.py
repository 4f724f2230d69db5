"""When the bridge acts without waiting for its intervals. Real bridge, real Redis
registry and result backend, a recording pool.

- It re-registers as soon as the capacity it advertises changes: the Node Pool
  learns capacity from registrations alone and drops its own reservations at every
  ReportStatus, so a stale registration would let it dispatch a task the site no
  longer has room for (and leave freed room unused).
- It reports status right after a delivered result freed room.
- A worker storing a task's outcome starts a relay pass at once."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from bridge.server import Bridge
from tests.test_bridge_relay import finish
from tests.test_bridge_service import (RecordingPool, add_worker, db, execute, pool,  # noqa: F401 - fixtures
                                       start_bridge, wait_for)

pytestmark = pytest.mark.redis

HEARTBEAT_DB = 56  # fixed, like the other bridge modules (see test_bridge_service.py)


@pytest.fixture(scope="module")
def redis_url(redis_base: str) -> str:
    return f"{redis_base}/{HEARTBEAT_DB}"


def test_capacity_change_is_registered_before_the_interval(start_bridge: Callable[..., Bridge],
                                                           pool: RecordingPool, db: redis.Redis) -> None:
    registry = add_worker(db, cpus=4, memory_mb=8192)
    start_bridge(registration_interval=3600.0)  # only the first registration is due by the clock
    wait_for(lambda: pool.of("RegisterWorkerNode") and pool.of("RegisterWorkerNode")[-1].cpu_score == 400,
             "the first registration with all four cores free")

    registry.allocate("a-task", 2.0, 1024, ttl=600)
    latest = wait_for(lambda: [r for r in pool.of("RegisterWorkerNode") if r.cpu_score == 200],
                      "a registration advertising two free cores after two were allocated")
    assert latest[-1].memory_gb == 7
    registry.release("a-task")
    wait_for(lambda: pool.of("RegisterWorkerNode")[-1].cpu_score == 400, "the cores advertised again once freed")

    # Unchanged capacity: heartbeats go on, registrations do not repeat.
    count = len(pool.of("RegisterWorkerNode"))
    beats = len(pool.of("ReportStatus"))
    wait_for(lambda: len(pool.of("ReportStatus")) >= beats + 5, "five more heartbeats")
    assert len(pool.of("RegisterWorkerNode")) == count


def test_delivered_result_makes_the_bridge_report_at_once(start_bridge: Callable[..., Bridge],
                                                          pool: RecordingPool, db: redis.Redis) -> None:
    """The room a finished task frees is reported right after its result is delivered,
    not at the next heartbeat (30 s here, the longest allowed)."""
    add_worker(db, cpus=4, memory_mb=8192)
    bridge = start_bridge(heartbeat_interval=30.0, relay_interval=0.1)
    wait_for(lambda: pool.of("ReportStatus"), "the first heartbeat")
    assert execute(bridge, "t-wake", cpu_usage=100.0).success
    beats = len(pool.of("ReportStatus"))
    finish(db, bridge, "t-wake")
    wait_for(lambda: pool.of("TaskResultUpload", "t-wake"), "the result delivered", limit=10)
    wait_for(lambda: len(pool.of("ReportStatus")) > beats, "a heartbeat right after the delivery", limit=10)


def test_stored_result_wakes_the_relay(start_bridge: Callable[..., Bridge], pool: RecordingPool,
                                       db: redis.Redis) -> None:
    """A worker storing the outcome (Celery's Redis backend publishes it) starts a relay
    pass at once; the relay interval here is 30 s."""
    add_worker(db, cpus=4, memory_mb=8192)
    bridge = start_bridge(relay_interval=30.0)
    assert execute(bridge, "t-watch", cpu_usage=100.0).success
    time.sleep(0.5)  # past the relay's first pass at start
    finish(db, bridge, "t-watch")
    wait_for(lambda: pool.of("TaskResultUpload", "t-watch"), "the result delivered on the stored state", limit=10)
