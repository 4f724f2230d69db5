"""Recording a task's delivery for rescue (site/rescue.py) against a real Redis:
only a worker the registry counts as live records it."""

from __future__ import annotations

import time

import pytest
import redis

from hivemind_celery.core import keys
from hivemind_celery.site import rescue
from hivemind_celery.site.registry import Registry, WorkerCapacity

pytestmark = pytest.mark.redis
REDIS_DB = 52  # this module's own (see test_registry.py)


@pytest.fixture(scope="module")
def redis_url(redis_base: str) -> str:
    url = f"{redis_base}/{REDIS_DB}"
    redis.Redis.from_url(url).flushdb()
    return url


def _deliveries(client: redis.Redis, worker: str) -> dict[bytes, bytes]:
    return client.hgetall(keys.worker_deliveries(worker))  # type: ignore[return-value]


def test_only_a_live_worker_records_its_deliveries(redis_client: redis.Redis) -> None:
    redis_client.flushdb()
    registry = Registry(redis_client)
    # Never registered: it would look dead at once, and its running task be handed out.
    assert not rescue.record(registry, "ghost@h", "t-0", "tag-0")
    assert _deliveries(redis_client, "ghost@h") == {}
    registry.register(WorkerCapacity(worker_id="w@h", hostname="h", cpus=2, memory_mb=1024), ttl=1.0)
    assert rescue.record(registry, "w@h", "t-1", "tag-1")
    assert _deliveries(redis_client, "w@h") == {b"t-1": b"tag-1"}
    assert redis_client.smembers(keys.workers_with_deliveries()) == {b"w@h"}
    time.sleep(1.2)  # its deadline passes without a heartbeat: no longer live
    assert not rescue.record(registry, "w@h", "t-2", "tag-2")
    assert _deliveries(redis_client, "w@h") == {b"t-1": b"tag-1"}
