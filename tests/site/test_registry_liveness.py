"""How many workers are live and when the freshest beat (Registry.liveness), in a
real Redis: the registry's own rule (deadline in Redis server time) decides, so a
worker that stopped beating drops out although nobody unregistered it."""

from __future__ import annotations

import time

import pytest

from hivemind_celery.site.registry import Registry, WorkerCapacity

pytestmark = [pytest.mark.redis]


def worker(name: str) -> WorkerCapacity:
    return WorkerCapacity(worker_id=name, hostname=f"host-{name}", cpus=2, memory_mb=1024, queues=["cpu"])


@pytest.fixture
def registry(redis_client) -> Registry:
    redis_client.flushdb()
    return Registry(redis_client, heartbeat_interval=10.0)


def redis_now(registry: Registry) -> float:
    seconds, micros = registry.client.time()
    return seconds + micros / 1e6


def test_no_worker_is_no_beat(registry: Registry) -> None:
    liveness = registry.liveness()
    assert (liveness.workers, liveness.last_heartbeat) == (0, None)


def test_the_freshest_beat_of_the_live_workers(registry: Registry) -> None:
    registry.register(worker("w1"))
    time.sleep(0.05)
    registry.register(worker("w2"))
    liveness = registry.liveness()
    assert liveness.workers == 2
    beat_w2 = next(w.last_heartbeat for w in registry.workers() if w.capacity.worker_id == "w2")
    assert liveness.last_heartbeat == pytest.approx(beat_w2)
    time.sleep(0.05)
    registry.heartbeat("w1")
    beat_w1 = next(w.last_heartbeat for w in registry.workers() if w.capacity.worker_id == "w1")
    assert beat_w1 > beat_w2
    assert registry.liveness().last_heartbeat == pytest.approx(beat_w1)
    assert registry.liveness().last_heartbeat <= redis_now(registry)


def test_a_silent_worker_drops_out_without_anyone_unregistering_it(registry: Registry) -> None:
    registry.register(worker("steady"))
    registry.register(worker("silent"), ttl=0.3)  # as if it had missed its beats 0.3 s from now
    assert registry.liveness().workers == 2
    time.sleep(0.5)
    liveness = registry.liveness()
    assert liveness.workers == 1
    assert [w.capacity.worker_id for w in registry.workers()] == ["steady"]


def test_an_unregistered_worker_is_gone_at_once(registry: Registry) -> None:
    registry.register(worker("w1"))
    registry.unregister("w1")
    assert registry.liveness().workers == 0
    assert registry.liveness().last_heartbeat is None
