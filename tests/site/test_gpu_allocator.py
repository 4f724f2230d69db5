"""The per-host GPU allocator against a real Redis, and what the site offers.

No GPU can exist on the test machine: the four GPUs of different memory are
described as NVML would report them (tests/usage/gpu_standin.py)."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
import redis

from bridge.capacity import advertised
from hivemind_celery.core.settings import Settings
from hivemind_celery.site.gpu_allocator import GpuAllocator, GpuRefused
from hivemind_celery.site.heartbeat import local_capacity
from hivemind_celery.site.registry import Registry
from hivemind_celery.usage import gpu
from hivemind_celery.usage.gpu import GpuInfo
from tests.usage.gpu_standin import FOUR_GPUS, UUIDS, standin_gpus

pytestmark = pytest.mark.redis


def described(gpus: list[dict] = FOUR_GPUS) -> list[GpuInfo]:
    return [
        GpuInfo(
            index=i,
            name=g["name"],
            uuid=g["uuid"],
            load_percent=0.0,
            memory_used_mb=0,
            memory_total_mb=g["memory_mb"],
            temperature_c=None,
            power_w=None,
        )
        for i, g in enumerate(gpus)
    ]


@pytest.fixture()
def allocator(redis_client: redis.Redis) -> GpuAllocator:
    redis_client.flushdb()
    return GpuAllocator(redis_client, host="host-a")


def wait_for(predicate, timeout: float = 15.0, step: float = 0.2):
    """Poll until predicate() is truthy (a wait for expiry, not a speed check)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def test_one_task_per_gpu_until_released(allocator: GpuAllocator) -> None:
    offered = described()
    given = [allocator.allocate(f"t{i}", offered, 1, 0, ttl=60) for i in range(4)]
    assert [g[0].uuid for g in given if g] == UUIDS  # every card once, in NVML's order
    assert allocator.allocate("t4", offered, 1, 0, ttl=60) is None  # all four busy
    assert allocator.release("t1") == 1
    again = allocator.allocate("t4", offered, 1, 0, ttl=60)
    assert again is not None and again[0].uuid == UUIDS[1]
    assert sorted((lease.uuid, lease.task_id) for lease in allocator.leases()) == sorted(
        [(UUIDS[0], "t0"), (UUIDS[1], "t4"), (UUIDS[2], "t2"), (UUIDS[3], "t3")]
    )


def test_a_task_asking_again_keeps_its_gpus(allocator: GpuAllocator) -> None:
    offered = described()
    first = allocator.allocate("t", offered, 2, 0, ttl=60)
    assert first is not None and allocator.allocate("t", offered, 2, 0, ttl=60) == first
    assert len(allocator.leases()) == 2


def test_a_rerun_offered_other_gpus_drops_the_earlier_runs_leases(allocator: GpuAllocator) -> None:
    offered = described()
    assert allocator.allocate("t", offered[:1], 1, 0, ttl=60) is not None  # a worker offering GPU 0
    again = allocator.allocate("t", offered[2:], 1, 0, ttl=60)  # its rerun, on one offering GPUs 2 and 3
    assert again is not None and again[0].uuid == UUIDS[2]
    assert [(lease.uuid, lease.task_id) for lease in allocator.leases()] == [(UUIDS[2], "t")]


def test_hosts_do_not_share_gpus(redis_client: redis.Redis, allocator: GpuAllocator) -> None:
    other = GpuAllocator(redis_client, host="host-b")
    offered = described()[:1]
    assert allocator.allocate("a", offered, 1, 0, ttl=60) is not None
    assert other.allocate("b", offered, 1, 0, ttl=60) is not None  # same UUID text, another machine


def test_memory_bigger_than_any_card_or_too_many_gpus_is_refused(allocator: GpuAllocator) -> None:
    offered = described()
    with pytest.raises(GpuRefused, match=r"asks for 5 GPU\(s\); this host offers 4"):
        allocator.allocate("t", offered, 5, 0, ttl=60)
    with pytest.raises(GpuRefused, match=r"100000 MiB of GPU memory .* largest, GPU 0 Stand-in A100 80GB, has 81920"):
        allocator.allocate("t", offered, 1, 100_000, ttl=60)
    with pytest.raises(GpuRefused, match=r"only 2 GPU\(s\) here have that much"):
        allocator.allocate("t", offered, 3, 30_000, ttl=60)
    assert allocator.leases() == []


def test_memory_request_picks_a_card_big_enough(allocator: GpuAllocator) -> None:
    offered = described()
    big = allocator.allocate("big", offered, 1, 30_000, ttl=60)
    assert big is not None and big[0].uuid == UUIDS[0]
    second = allocator.allocate("big2", offered, 1, 30_000, ttl=60)
    assert second is not None and second[0].uuid == UUIDS[1]
    assert allocator.allocate("big3", offered, 1, 30_000, ttl=60) is None  # the small cards never fit


def test_shared_gpus_check_memory_left_on_the_card(redis_client: redis.Redis) -> None:
    redis_client.flushdb()
    shared = GpuAllocator(redis_client, host="host-s", share=3)
    t4 = described()[3:]  # 15360 MiB
    assert shared.allocate("a", t4, 1, 8000, ttl=60) is not None
    assert shared.allocate("b", t4, 1, 8000, ttl=60) is None  # 7360 MiB left
    assert shared.allocate("c", t4, 1, 7000, ttl=60) is not None
    assert shared.allocate("d", t4, 1, 400, ttl=60) is None  # 360 MiB left
    assert shared.allocate("d", t4, 1, 0, ttl=60) is not None  # the third task, asking no memory
    assert shared.allocate("e", t4, 1, 0, ttl=60) is None  # three tasks: the share is full
    assert Counter(lease.uuid for lease in shared.leases()) == {UUIDS[3]: 3}


def test_shared_gpus_spread_before_they_stack(redis_client: redis.Redis) -> None:
    redis_client.flushdb()
    shared = GpuAllocator(redis_client, host="host-s", share=2)
    offered = described()[:2]
    got = [shared.allocate(f"t{i}", offered, 1, 0, ttl=60) for i in range(4)]
    assert [g[0].uuid for g in got if g] == [UUIDS[0], UUIDS[1], UUIDS[0], UUIDS[1]]


def test_lapsed_leases_come_back(allocator: GpuAllocator) -> None:
    offered = described()[:1]
    assert allocator.allocate("crashed", offered, 1, 0, ttl=1) is not None
    assert allocator.allocate("next", offered, 1, 0, ttl=60) is None
    assert wait_for(lambda: allocator.allocate("next", offered, 1, 0, ttl=60), timeout=10)
    assert [lease.task_id for lease in allocator.leases()] == ["next"]


def test_renewed_leases_do_not_lapse(allocator: GpuAllocator) -> None:
    offered = described()[:1]
    assert allocator.allocate("alive", offered, 1, 0, ttl=1.5) is not None
    for _ in range(4):  # 2 s in all, past the first deadline
        time.sleep(0.5)
        assert allocator.renew("alive", 1.5) == 1
    assert allocator.allocate("other", offered, 1, 0, ttl=60) is None


def test_racing_allocations_never_hand_one_gpu_twice(redis_url: str, allocator: GpuAllocator) -> None:
    offered = described()
    got: dict[str, list[str]] = {}
    start = threading.Barrier(12)

    def take(task_id: str) -> None:
        own = GpuAllocator(redis.Redis.from_url(redis_url), host="host-a")
        start.wait()
        given = own.allocate(task_id, offered, 1, 0, ttl=60)
        got[task_id] = [g.uuid for g in given or []]

    threads = [threading.Thread(target=take, args=(f"t{i}",)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    handed = [u for uuids in got.values() for u in uuids]
    assert sorted(handed) == sorted(UUIDS)  # four winners, each GPU once, eight told "busy"


def test_gpu_devices_limit_what_the_registry_offers_and_the_bridge_registers(redis_client: redis.Redis) -> None:
    redis_client.flushdb()
    registry = Registry(redis_client)
    with standin_gpus():
        settings = Settings(gpu_devices=["1", UUIDS[3]], capacity_cpus=4, capacity_memory_mb=8192)
        registry.register(local_capacity(settings, "w-gpu", "host-a", ["gpu"]))
        assert len(gpu.list_gpus()) == 4  # NVML sees four; the owner shares two
    cap = registry.capacity()
    assert (cap.gpus_total, cap.gpu_memory_mb_total) == (2, 40960 + 15360)
    assert cap.gpu_models == {"Stand-in A100 40GB": 1, "Stand-in T4": 1}
    pool_side = advertised(cap, cpu_score_per_core=100, gpu_score_per_gpu=100)
    assert (pool_side.gpu_score, pool_side.gpu_memory_gb) == (200, (40960 + 15360) // 1024)
    assert pool_side.gpu_name in {"Stand-in A100 40GB", "Stand-in T4"}
