"""When the bridge acts without waiting for its intervals, and what it registers.
Real bridge, real Redis registry and result backend, a recording pool.

- It registers the site's total capacity, the same figures while tasks run: the
  deployed pool keeps its own reservations and clamps them to every registration.
  It re-registers at once when the totals grow (a worker came), never shrinks them
  (a worker going), and registers nothing before a worker is live.
- It reports status right after accepting a task (the deployed pool marks a node
  BUSY after every dispatch) and right after a finished task freed room.
- A refused node-level usage call never fails the beat; node usage goes when it
  changes, not with every beat; a wake cuts a retry wait.
- A worker storing a task's outcome starts a relay pass at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import redis

from bridge.server import Bridge
from tests.bridge_kit import RecordingPool, add_worker, execute, finish, wait_for

pytestmark = pytest.mark.redis

HEARTBEAT_DB = 56  # fixed, like the other bridge modules (see test_bridge_service.py)


@pytest.fixture(scope="module")
def redis_url(redis_base: str) -> str:
    return f"{redis_base}/{HEARTBEAT_DB}"


def test_registration_keeps_the_totals_and_follows_workers(
    start_bridge: Callable[..., Bridge], pool: RecordingPool, db: redis.Redis
) -> None:
    registry = add_worker(db, cpus=4, memory_mb=8192)
    start_bridge(registration_interval=3600.0)  # only the first registration is due by the clock
    wait_for(
        lambda: pool.of("RegisterWorkerNode") and pool.of("RegisterWorkerNode")[-1].cpu_score == 400,
        "the first registration with all four cores",
    )

    count = len(pool.of("RegisterWorkerNode"))
    registry.allocate("a-task", 3.5, 1024, ttl=600)
    wait_for(lambda: pool.of("ReportStatus")[-1].status == "Full", "the status saying the site is full")
    beats = len(pool.of("ReportStatus"))
    wait_for(lambda: len(pool.of("ReportStatus")) >= beats + 5, "five more heartbeats")
    assert len(pool.of("RegisterWorkerNode")) == count  # an allocation changes no registration
    registry.release("a-task")
    wait_for(lambda: pool.of("ReportStatus")[-1].status == "Idle", "Idle again once freed")

    add_worker(db, "w2", cpus=2, memory_mb=4096)
    latest = wait_for(
        lambda: [r for r in pool.of("RegisterWorkerNode") if r.cpu_score == 600],
        "a registration with the new worker's cores, before the interval",
    )
    assert (latest[-1].cpu_cores, latest[-1].memory_gb) == (6, 12)

    # A worker going (a restart, say) never shrinks the registration: the status says it.
    count = len(pool.of("RegisterWorkerNode"))
    registry.unregister("w1")
    registry.unregister("w2")
    wait_for(lambda: pool.of("ReportStatus")[-1].status == "No workers", "the status saying no worker is live")
    beats = len(pool.of("ReportStatus"))
    wait_for(lambda: len(pool.of("ReportStatus")) >= beats + 3, "three more heartbeats")
    assert len(pool.of("RegisterWorkerNode")) == count


def test_accepting_a_task_reports_status_at_once(
    start_bridge: Callable[..., Bridge], pool: RecordingPool, db: redis.Redis
) -> None:
    """Right after an accepted task (the deployed pool now holds the node BUSY), a
    ReportStatus saying Idle while room remains; the heartbeat interval here is 30 s."""
    add_worker(db, cpus=4, memory_mb=8192)
    bridge = start_bridge(heartbeat_interval=30.0)
    wait_for(lambda: pool.of("ReportStatus"), "the first heartbeat")
    beats = len(pool.of("ReportStatus"))
    assert execute(bridge, "t-accept-1", cpu_usage=100.0).success
    after = wait_for(lambda: pool.of("ReportStatus")[beats:], "a status report right after the accept", limit=10)
    assert after[0].status == "Idle" and after[0].running_tasks == 1


def test_refused_node_usage_never_fails_the_beat(
    start_bridge: Callable[..., Bridge], pool: RecordingPool, db: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    add_worker(db, cpus=4, memory_mb=8192)
    pool.refuse_node_usage = True  # answers success=false, like a pool that does not know the node id
    start_bridge(registration_interval=3600.0)
    wait_for(lambda: len(pool.of("ReportStatus")) >= 10, "ten heartbeats while node usage is refused")
    assert len(pool.of("RegisterWorkerNode")) == 1  # no beat failed: nothing forced a new registration
    assert "heartbeat failed" not in caplog.text
    assert caplog.text.count("node usage not taken") == 1  # said once, not every beat


def test_node_usage_goes_when_it_changes_not_every_beat(
    start_bridge: Callable[..., Bridge], pool: RecordingPool, db: redis.Redis
) -> None:
    add_worker(db, cpus=4, memory_mb=8192)
    before = len(pool.of("TaskUsage", "0"))
    beats = len(pool.of("ReportStatus"))
    bridge = start_bridge(registration_interval=3600.0)
    wait_for(lambda: len(pool.of("ReportStatus")) >= beats + 10, "ten heartbeats of an idle site")
    idle = pool.of("TaskUsage", "0")[before:]
    assert len(idle) == 1, idle  # the same figures: sent once, not with each beat
    assert execute(bridge, "t-node-usage", cpu_usage=200.0).success  # half the site's CPU reserved
    changed = wait_for(lambda: pool.of("TaskUsage", "0")[before + 1 :], "node usage after it changed")
    assert changed[0].cpu_usage == 50.0
    finish(db, bridge, "t-node-usage")


def test_a_wake_cuts_a_retry_wait() -> None:
    from bridge.retry import until_stopped

    stop, wake = threading.Event(), threading.Event()
    retrying = until_stopped(stop, "test", "node", max_wait=3600.0, wake=wake)
    sleeper = threading.Thread(target=retrying.sleep, args=(3600.0,))
    sleeper.start()
    wake.set()
    sleeper.join(timeout=10)
    assert not sleeper.is_alive(), "the retry wait did not end on the wake"
    assert not wake.is_set()  # consumed, so the next wait is a whole one


def test_delivered_result_makes_the_bridge_report_at_once(
    start_bridge: Callable[..., Bridge], pool: RecordingPool, db: redis.Redis
) -> None:
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


def test_stored_result_wakes_the_relay(start_bridge: Callable[..., Bridge], pool: RecordingPool, db: redis.Redis) -> None:
    """A worker storing the outcome (Celery's Redis backend publishes it) starts a relay
    pass at once; the relay interval here is 30 s."""
    add_worker(db, cpus=4, memory_mb=8192)
    bridge = start_bridge(relay_interval=30.0)
    assert execute(bridge, "t-watch", cpu_usage=100.0).success
    time.sleep(0.5)  # past the relay's first pass at start
    finish(db, bridge, "t-watch")
    wait_for(lambda: pool.of("TaskResultUpload", "t-watch"), "the result delivered on the stored state", limit=10)


def test_the_bridge_keeps_its_standing_for_the_console(
    start_bridge: Callable[..., Bridge], pool: RecordingPool, db: redis.Redis
) -> None:
    """The console's Overview reads whether the site is joined from hm:bridge:status."""
    from hivemind_celery.core import keys

    db.delete(keys.bridge_status())
    add_worker(db, cpus=4, memory_mb=8192)
    bridge = start_bridge()
    wait_for(lambda: pool.of("ReportStatus"), "the first heartbeat")
    standing = wait_for(lambda: db.hgetall(keys.bridge_status()).get(b"status"), "the standing written")
    assert standing.decode() in {report.status for report in pool.of("ReportStatus")}
    stored = db.hgetall(keys.bridge_status())
    assert stored[b"node_id"].decode() == bridge.config.node_id
    assert stored[b"error"] == b""
    assert time.time() - float(stored[b"last_beat"]) < 60
