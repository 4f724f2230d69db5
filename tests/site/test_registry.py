"""The worker registry against a real Redis, and with a real Celery worker."""

from __future__ import annotations

import signal
import time

import pytest
import redis

from hivemind_celery.core import keys
from hivemind_celery.site.registry import Registry, WorkerCapacity

pytestmark = pytest.mark.redis
# A database of this module's own, fixed: the shared counter in conftest hands
# the same numbers to every pytest session, and sessions run side by side.
REDIS_DB = 50


@pytest.fixture(scope="module")
def redis_url(redis_base: str) -> str:
    url = f"{redis_base}/{REDIS_DB}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture()
def registry(redis_client: redis.Redis) -> Registry:
    redis_client.flushdb()
    return Registry(redis_client)


def cpu_worker(name: str, cpus: float = 4, memory_mb: int = 8192) -> WorkerCapacity:
    return WorkerCapacity(worker_id=name, hostname=f"host-{name}", cpus=cpus, memory_mb=memory_mb, queues=["cpu"])


def gpu_worker(name: str) -> WorkerCapacity:
    return WorkerCapacity(
        worker_id=name,
        hostname=f"host-{name}",
        cpus=16,
        memory_mb=65536,
        gpus=2,
        gpu_memory_mb=2 * 81920,
        gpu_names=["NVIDIA H100", "NVIDIA H100"],
        queues=["gpu", "cpu"],
    )


def wait_for(predicate, timeout: float = 15.0, step: float = 0.2):
    """Poll until predicate() is truthy (a wait for expiry, not a speed check)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def test_workers_raise_capacity_and_clean_unregister_lowers_it(registry: Registry) -> None:
    empty = registry.capacity()
    assert (empty.workers, empty.cpus_total, empty.memory_mb_total, empty.gpus_total) == (0, 0, 0, 0)
    registry.register(cpu_worker("a", cpus=96, memory_mb=1000))
    assert registry.capacity().cpus_total == 96
    registry.register(gpu_worker("b"))
    cap = registry.capacity()
    assert (cap.workers, cap.cpus_total, cap.memory_mb_total) == (2, 112, 1000 + 65536)
    assert (cap.gpus_total, cap.gpu_memory_mb_total) == (2, 163840)
    assert cap.gpu_names == ["NVIDIA H100"] and cap.gpu_models == {"NVIDIA H100": 2}
    assert cap.queues == ["cpu", "gpu"] and cap.queue_workers == {"cpu": 2, "gpu": 1}
    assert cap.cpus_free == 112 and cap.allocations == 0

    assert registry.unregister("b") is True
    cap = registry.capacity()
    assert (cap.workers, cap.cpus_total, cap.gpus_total, cap.gpu_names, cap.queues) == (1, 96, 0, [], ["cpu"])
    assert registry.unregister("b") is False  # idempotent
    assert [w.capacity.worker_id for w in registry.workers()] == ["a"]


def test_reregistering_replaces_rather_than_adds(registry: Registry) -> None:
    registry.register(cpu_worker("a", cpus=4))
    registry.register(cpu_worker("a", cpus=2.5, memory_mb=100))
    cap = registry.capacity()
    assert (cap.workers, cap.cpus_total, cap.memory_mb_total) == (1, 2.5, 100)


def test_silent_worker_expires_and_heartbeat_keeps_one_alive(registry: Registry) -> None:
    # "killed" never beats again; "alive" beats. TTL 1 s stands for 3 missed beats.
    registry.register(cpu_worker("killed", cpus=2), ttl=1.0)
    registry.register(cpu_worker("alive", cpus=3), ttl=1.0)
    assert registry.capacity().cpus_total == 5

    def only_alive_left() -> bool:
        assert registry.heartbeat("alive", ttl=1.0)
        return registry.capacity().workers == 1

    assert wait_for(only_alive_left)
    cap = registry.capacity()
    assert (cap.cpus_total, cap.memory_mb_total) == (3, 8192)
    assert [w.capacity.worker_id for w in registry.workers()] == ["alive"]
    assert not registry.client.exists(keys.worker_info("killed"))
    # A worker counted gone learns it from its heartbeat and registers again.
    assert registry.heartbeat("killed") is False
    registry.register(cpu_worker("killed", cpus=2))
    assert registry.capacity().cpus_total == 5


def test_ten_thousand_workers(registry: Registry) -> None:
    fleet = [cpu_worker(f"w{i:05d}", cpus=1 + i % 4, memory_mb=1024) for i in range(10_000)]
    registry.register_many(fleet, ttl=600.0)
    cap = registry.capacity()
    assert cap.workers == 10_000
    assert cap.cpus_total == sum(1 + i % 4 for i in range(10_000))
    assert cap.memory_mb_total == 10_000 * 1024
    assert cap.queue_workers == {"cpu": 10_000}
    # Half of them stop beating (a 0.5 s deadline): they expire together, in
    # more than one reap batch.
    registry.register_many(fleet[:5000], ttl=0.5)
    assert wait_for(lambda: registry.capacity().workers == 5000)
    cap = registry.capacity()
    assert cap.cpus_total == sum(1 + i % 4 for i in range(5000, 10_000))
    assert registry.client.zcard(keys.workers_by_deadline()) == 5000
    assert registry.reconcile() == 0
    assert registry.capacity() == cap  # the maintained totals were right


def test_allocations_are_idempotent_and_released_once(registry: Registry) -> None:
    registry.register(gpu_worker("g"))
    assert registry.allocate("t1", cpus=2.5, memory_mb=1000, gpus=1, gpu_memory_mb=40000)
    assert registry.allocate("t1", cpus=2.5, memory_mb=1000, gpus=1, gpu_memory_mb=40000)  # the worker's
    cap = registry.capacity()
    assert (cap.cpus_free, cap.memory_mb_free, cap.gpus_free, cap.gpu_memory_mb_free) == (13.5, 64536, 1, 163840 - 40000)
    assert cap.allocations == 1
    assert registry.can_fit(13.5, 64536, 1, 123840)
    assert not registry.can_fit(13.6, 1)
    assert not registry.can_fit(1, 1, gpus=2)
    assert registry.release("t1") is True
    assert registry.release("t1") is False
    cap = registry.capacity()
    assert (cap.cpus_free, cap.gpus_free, cap.allocations) == (16, 2, 0)


def test_refresh_never_shortens_a_deadline(registry: Registry) -> None:
    registry.allocate("t", 1, 10, ttl=600)  # the bridge, at intake
    deadline = registry.client.zscore(keys.allocations_by_deadline(), "t")
    registry.allocate("t", 1, 10, ttl=5)  # the worker's short refresh
    assert registry.client.zscore(keys.allocations_by_deadline(), "t") == deadline
    registry.allocate("t", 1, 10, ttl=6000)
    assert registry.client.zscore(keys.allocations_by_deadline(), "t") > deadline


def test_require_fit_refuses_atomically(registry: Registry) -> None:
    registry.register(cpu_worker("a", cpus=2, memory_mb=1000))
    assert registry.allocate("x", 1.5, 500, require_fit=True)
    assert not registry.allocate("y", 1.0, 100, require_fit=True)  # only 0.5 CPUs left
    assert registry.allocate("x", 1.5, 500, require_fit=True)  # already held: still true
    assert registry.capacity().allocations == 1


def test_expired_allocation_is_reclaimed_and_refresh_keeps_one(registry: Registry) -> None:
    registry.register(cpu_worker("a", cpus=4))
    registry.allocate("crashed", 1, 100, ttl=1.0)
    registry.allocate("running", 2, 100, ttl=1.0)
    assert registry.capacity().cpus_free == 1

    def crashed_reclaimed() -> bool:
        registry.allocate("running", 2, 100, ttl=1.0)  # the running task refreshes
        return registry.capacity().cpus_free == 2

    assert wait_for(crashed_reclaimed)
    assert registry.release("crashed") is False
    assert registry.release("running") is True
    assert registry.capacity().cpus_free == 4


def test_reconcile_repairs_drifted_totals(registry: Registry) -> None:
    registry.register(cpu_worker("a", cpus=4))
    registry.allocate("t", 1, 10)
    client = registry.client
    client.hset(keys.site_capacity(), "cpus_milli", 999_000)
    client.hset(keys.site_allocated(), "memory_mb", -5)
    client.zadd(keys.workers_by_deadline(), {"ghost": time.time() + 10_000})  # no info hash
    assert registry.reconcile() == 1
    cap = registry.capacity()
    assert (cap.workers, cap.cpus_total, cap.cpus_free, cap.memory_mb_free) == (1, 4, 3, 8192 - 10)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: r.allocate("t", -1, 10), "cpus"),
        (lambda r: r.allocate("t", float("nan"), 10), "cpus"),
        (lambda r: r.allocate("t", 1, 10, ttl=float("inf")), "ttl"),
        (lambda r: r.allocate("", 1, 10), "task_id"),
        (lambda r: r.register(WorkerCapacity("w", "h", cpus=1, memory_mb=-1)), "memory_mb"),
    ],
)
def test_bad_input_names_the_field(registry: Registry, call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(registry)
    assert registry.capacity().allocations == 0


@pytest.mark.docker
def test_real_celery_worker_registers_and_leaves(start_worker, celery_app, redis_client) -> None:
    registry = Registry(redis_client)
    worker = start_worker("cpu", concurrency=1, HIVEMIND_CAPACITY_CPUS="1.5", HIVEMIND_REGISTRY_HEARTBEAT_INTERVAL="1")
    listed = {w.capacity.worker_id: w for w in registry.workers()}
    assert worker.hostname in listed, worker.log()
    assert listed[worker.hostname].capacity.queues == ["cpu"]
    assert listed[worker.hostname].capacity.cpus == 1.5
    replies = celery_app.control.broadcast("capabilities", destination=[worker.hostname], reply=True, timeout=5)
    assert replies and replies[0][worker.hostname]["cpus"] == 1.5
    # It keeps beating: still listed after several beat intervals.
    first = listed[worker.hostname].last_heartbeat
    assert wait_for(lambda: any(w.last_heartbeat > first for w in registry.workers()))
    worker.stop(signal.SIGTERM)
    assert worker.hostname not in {w.capacity.worker_id for w in registry.workers()}, worker.log()


@pytest.mark.docker
def test_killed_celery_worker_expires(start_worker, redis_client) -> None:
    registry = Registry(redis_client)
    worker = start_worker("cpu", concurrency=1, HIVEMIND_REGISTRY_HEARTBEAT_INTERVAL="1")
    assert worker.hostname in {w.capacity.worker_id for w in registry.workers()}
    worker.stop(signal.SIGKILL)
    # No clean-up ran; three missed 1 s beats later it no longer counts.
    assert wait_for(lambda: worker.hostname not in {w.capacity.worker_id for w in registry.workers()})
