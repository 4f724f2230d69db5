"""Our Node Pool and the real bridge, end to end over loopback gRPC: the bridge logs in,
registers with its bearer token and reports Idle; the pool dispatches to it with the
shared worker secret; the worker's result is relayed back, ends the task and is paid.

The Celery worker's side is played with the worker's own code (store_result and the
result backend, via the bridge tests' `finish` helper), so no container runs here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bridge.server import Bridge
from hivemind_celery.core.settings import Settings
from nodepool import results
from nodepool.server import RunningPool
from proto import nodepool_pb2 as pb
from tests.bridge_kit import add_worker, finish
from tests.nodepool_kit import (
    PASSWORD,
    Client,
    make_zip,
    new_task_id,
    serving_pool,
    task_status,
    wait_for,
)

pytestmark = pytest.mark.redis

# A fixed database of this module's own: its Celery queues must not be shared with
# other test runs' workers (the bridge modules use 60 and 61).
POOL_BRIDGE_DB = 57
WORKER_SECRET = "pool-to-bridge-secret"


@pytest.fixture()
def db(redis_base: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(f"{redis_base}/{POOL_BRIDGE_DB}")
    client.flushdb()
    yield client
    client.close()


@pytest.fixture()
def pool(tmp_path: Path) -> Iterator[RunningPool]:
    with serving_pool(tmp_path, {"owner": 100, "site1": 0}, worker_secret=WORKER_SECRET) as running:
        yield running


@pytest.fixture()
def bridge(pool: RunningPool, db: redis.Redis, redis_base: str) -> Iterator[Bridge]:
    add_worker(db, cpus=4, memory_mb=8192)
    settings = Settings(
        redis_url=f"{redis_base}/{POOL_BRIDGE_DB}",
        username="site1",
        password=PASSWORD,
        nodepool_address=pool.address.replace("127.0.0.1", "localhost"),
        bridge_port=0,
        bridge_bind="127.0.0.1",
        bridge_secret=WORKER_SECRET,
        heartbeat_interval=0.2,
        registration_interval=0.5,
        relay_interval=0.1,
    )
    running = Bridge(settings).start()
    yield running
    running.stop(grace=0)


def test_pool_and_bridge_speak_the_same_protocol(pool: RunningPool, bridge: Bridge, db: redis.Redis) -> None:
    store = pool.pool.store
    wait_for(
        lambda: store.conn.execute("SELECT status FROM nodes WHERE node_id = 'site1'").fetchone(),
        what="the bridge's registration",
    )
    wait_for(
        lambda: store.conn.execute("SELECT status FROM nodes WHERE node_id = 'site1'").fetchone()[0] == "Idle",
        what="the bridge reporting Idle",
    )

    client = Client(pool.address)
    owner = client.login("owner")
    task_id = new_task_id()
    reply = client.master.UploadTask(
        pb.UploadTaskRequest(task_id=task_id, task_zip=make_zip(), memory_gb=1, cpu_score=100, token=owner)
    )
    assert reply.success, reply.message
    wait_for(lambda: task_status(client, owner, task_id).status == "RUNNING", what="task RUNNING on the bridge")
    assert task_status(client, owner, task_id).message == "running on site1"

    finish(db, bridge, task_id)
    wait_for(lambda: task_status(client, owner, task_id).status == "COMPLETED", what="the relayed result")
    fetched = client.master.GetTaskResult(pb.GetTaskResultRequest(task_id=task_id, token=owner))
    assert fetched.success and results.read_report(fetched.result_zip)["task_id"] == task_id
    payment = results.payment_for(store, task_id)
    assert payment is not None and payment.source == "report"
    client.close()
