"""A task's hold on its GPUs (task/gpus.py) against a real Redis: waiting for a
busy GPU, giving up, a stop while waiting, renewal while the task runs. The
GPUs are described as NVML would report them; no GPU can exist here."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from hivemind_celery.core.model import TaskSpec
from hivemind_celery.core.settings import Settings
from hivemind_celery.site.gpu_allocator import GpuAllocator
from hivemind_celery.site.prefs import PrefsStore
from hivemind_celery.task.gpus import GpuHold, NoFreeGpu, offered_now
from hivemind_celery.usage.gpu import GpuInfo
from tests.usage.gpu_standin import FOUR_GPUS, UUIDS, standin_gpus

pytestmark = pytest.mark.redis
T4 = [
    GpuInfo(
        index=3,
        name=FOUR_GPUS[3]["name"],
        uuid=FOUR_GPUS[3]["uuid"],
        load_percent=0.0,
        memory_used_mb=0,
        memory_total_mb=FOUR_GPUS[3]["memory_mb"],
        temperature_c=None,
        power_w=None,
    )
]


def hold(client: redis.Redis, **settings: object) -> GpuHold:
    spec = TaskSpec(task_id=f"h-{uuid.uuid4().hex[:8]}", payload="sha256:" + "0" * 64, gpus=1)
    return GpuHold(spec, client, Settings(**settings), offered=lambda: T4)


@pytest.fixture()
def client(redis_client: redis.Redis) -> redis.Redis:
    redis_client.flushdb()
    return redis_client


def test_a_busy_gpu_is_waited_for_then_given_up_with_a_reason(client) -> None:
    first = hold(client)
    first.acquire(lambda: False)
    assert first.uuids == (T4[0].uuid,)
    with pytest.raises(NoFreeGpu, match=r"no 1 free GPU\(s\) on this host within 0.6s"):
        hold(client, gpu_wait=0.6).acquire(lambda: False)
    first.release()
    second = hold(client, gpu_wait=0.6)
    second.acquire(lambda: False)
    assert second.uuids == (T4[0].uuid,)
    second.release()
    assert GpuAllocator(client).leases() == []


def test_a_stop_while_waiting_ends_the_wait_without_gpus(client) -> None:
    first = hold(client)
    first.acquire(lambda: False)
    waiting = hold(client, gpu_wait=30)
    asked = []
    waiting.acquire(lambda: asked.append(1) or len(asked) >= 2)  # stopped at the second look
    assert waiting.gpus == [] and len(asked) == 2
    first.release()


def test_the_lease_is_renewed_while_the_task_runs(client) -> None:
    running = hold(client, gpu_lease_ttl=1.0)
    running.acquire(lambda: False)
    time.sleep(2.5)  # past two lease lifetimes; the keeper renews every third of one
    other = GpuAllocator(client).allocate("other", T4, 1, 0, ttl=60)
    running.release()
    assert other is None
    assert GpuAllocator(client).leases() == []


def test_the_owners_gpu_choice_narrows_what_the_operator_shares(client) -> None:
    """The `gpus` preference (console, `hivemind prefs set gpus=...`) applies to the
    next task at once, inside what HIVEMIND_GPU_DEVICES shares. The four GPUs are
    the NVML stand-in's (tests/usage/gpu_standin.py): no GPU can exist here."""
    settings = Settings(gpu_devices=["0", "1", UUIDS[2]])
    with standin_gpus():
        assert [g.index for g in offered_now(client, settings)] == [0, 1, 2]
        PrefsStore(client, settings).update(gpus=[UUIDS[1], "3"])  # GPU 3 is not the operator's to lend
        assert [g.uuid for g in offered_now(client, settings)] == [UUIDS[1]]
        spec = TaskSpec(task_id=f"h-{uuid.uuid4().hex[:8]}", payload="sha256:" + "0" * 64, gpus=1)
        held = GpuHold(spec, client, settings)
        held.acquire(lambda: False)
        assert held.uuids == (UUIDS[1],)
        held.release()
        PrefsStore(client, settings).update(gpus=None)
        assert [g.index for g in offered_now(client, settings)] == [0, 1, 2]
