"""PrefsStore on a real Redis: environment defaults, validated changes, pause/resume,
the published mode; and the pause gate's share and consumer switching."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bridge import capacity
from hivemind_celery.core.prefs import SiteMode
from hivemind_celery.core.settings import Settings
from hivemind_celery.site.pause_gate import PauseGate
from hivemind_celery.site.prefs import PreferencesError, PrefsStore, worker_paused
from hivemind_celery.site.registry import Registry, WorkerCapacity

pytestmark = pytest.mark.redis


@pytest.fixture
def store(redis_client):
    redis_client.flushdb()
    return PrefsStore(
        redis_client,
        Settings(prefs_run_mode="when_idle", prefs_hours="22:00-07:00", prefs_cpu_share_percent=50, prefs_gpus="0, 1"),
    )


def test_defaults_come_from_the_environment(store) -> None:
    prefs = store.load()
    assert prefs.run_mode == "when_idle" and str(prefs.hours) == "22:00-07:00"
    assert prefs.cpu_share_percent == 50 and prefs.gpus == ["0", "1"]


def test_update_validates_and_keeps_the_rest(store) -> None:
    store.update(suspend_above_cpu_percent="40", hours=None)
    prefs = store.load()
    assert prefs.suspend_above_cpu_percent == 40 and prefs.hours is None and prefs.cpu_share_percent == 50
    with pytest.raises(PreferencesError, match="cpu_share_percent"):
        store.update(cpu_share_percent=0)
    with pytest.raises(PreferencesError, match="bogus"):
        store.update(bogus=1)
    assert store.load() == prefs  # nothing changed by a refused update


def test_pause_for_and_resume(store) -> None:
    prefs = store.pause(7200)
    assert prefs.paused_until is not None and (prefs.paused_until - datetime.now(UTC)).total_seconds() > 7000
    with pytest.raises(PreferencesError, match="positive"):
        store.pause(0)
    assert store.resume().paused_until is None
    assert store.pause().run_mode == "never"
    assert store.resume().run_mode == "when_idle"  # back to the environment's mode


def test_mode_is_running_until_published(store, redis_client) -> None:
    assert store.mode().state == "running"
    store.publish_worker_mode("w1", SiteMode(state="paused", reason="outside the hours 22:00-07:00"))
    assert store.mode().reason == "outside the hours 22:00-07:00"
    assert worker_paused(redis_client, "w1") and not worker_paused(redis_client, "w2")
    assert capacity.paused_status(store.mode().reason, 1).startswith("Paused (1 tasks frozen)")
    assert capacity.paused_status(store.mode().reason, 1) != capacity.IDLE


def test_site_is_paused_only_while_every_host_is(store, redis_client) -> None:
    store.publish_worker_mode("w1", SiteMode(state="paused", reason="the owner is using the machine (CPU 90 % > 50 %)"))
    store.publish_worker_mode("w2", SiteMode(state="running"))
    assert store.mode().state == "running"  # w2 still takes work
    store.publish_worker_mode("w2", SiteMode(state="paused", reason="outside the hours 22:00-07:00"))
    assert store.mode().paused
    # a host that stopped deciding (its worker gone) no longer counts
    redis_client.hset("hm:site:modes", "w2", '{"state": "running", "reason": "", "at": 0}')
    assert store.mode().paused and redis_client.hkeys("hm:site:modes") == [b"w1"]


def test_gate_pauses_switches_consumers_and_scales_capacity(store, redis_client) -> None:
    registry = Registry(redis_client)
    switched: list[bool] = []
    load = [10.0]
    gate = PauseGate(
        store,
        registry,
        WorkerCapacity("w1", "h", cpus=4.0, memory_mb=8000),
        lambda: load[0],
        consumers=switched.append,
        clock=lambda: datetime(2026, 12, 1, 23, 0),
        mode_id="w1",
    )
    store.update(run_mode="always", suspend_above_cpu_percent=50)
    assert not gate.check() and gate.mode.state == "running"
    assert registry.capacity().cpus_total == 2.0  # 50 % of 4 CPUs
    load[0] = 80.0
    assert gate.check() and gate.mode.paused and switched == [False]
    assert worker_paused(redis_client, "w1")
    load[0] = 20.0
    assert gate.check() and switched == [False, True]
    store.update(cpu_share_percent=25, memory_share_percent=50)
    gate.check()
    cap = registry.capacity()
    assert (cap.cpus_total, cap.memory_mb_total) == (1.0, 4000)
