"""TLS on both gRPC links, with certificates generated in the test: the bridge
dials a TLS Node Pool (HIVEMIND_NODEPOOL_CA_FILE) and the pool dials a TLS
bridge (HIVEMIND_NODEPOOL_WORKER_CA_FILE); login, registration, Idle and a
dispatched task all cross TLS. Plaintext or untrusted peers get nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis

from bridge.server import Bridge
from hivemind_celery.core.settings import Settings
from nodepool.server import RunningPool
from proto import nodepool_pb2 as pb
from proto import nodepool_pb2_grpc as pb_grpc
from tests.bridge_kit import add_worker, queued
from tests.nodepool_kit import (
    PASSWORD,
    add_user,
    make_zip,
    new_task_id,
    start_pool,
    wait_for,
)
from tests.tls_kit import Pki, make_pki

pytestmark = pytest.mark.redis

TLS_DB = 56  # fixed, like the other bridge modules: its queues are its own


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pki]:
    folder = tmp_path_factory.mktemp("pki")
    return {"pool": make_pki(folder, "pool"), "bridge": make_pki(folder, "bridge"), "stranger": make_pki(folder, "stranger")}


@pytest.fixture()
def db(redis_base: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(f"{redis_base}/{TLS_DB}")
    client.flushdb()
    yield client
    client.close()


@pytest.fixture()
def pool(tmp_path: Path, pki: dict[str, Pki]) -> Iterator[RunningPool]:
    running = start_pool(tmp_path, tls_cert_file=pki["pool"].cert, tls_key_file=pki["pool"].key, worker_ca_file=pki["bridge"].ca)
    add_user(running, "owner", balance=100)
    add_user(running, "site1")
    yield running
    running.stop()


def secure(address: str, ca: Path) -> grpc.Channel:
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=ca.read_bytes()))


def login(channel: grpc.Channel, user: str) -> str:
    reply = pb_grpc.UserServiceStub(channel).Login(pb.LoginRequest(username=user, password=PASSWORD), timeout=10)
    assert reply.success, reply.message
    return reply.token


def test_pool_serves_tls_only(pool: RunningPool, pki: dict[str, Pki]) -> None:
    address = f"localhost:{pool.port}"
    with secure(address, pki["pool"].ca) as channel:
        assert login(channel, "owner").startswith("ey")
    with grpc.insecure_channel(address) as plain, pytest.raises(grpc.RpcError) as caught:
        pb_grpc.UserServiceStub(plain).Login(pb.LoginRequest(username="owner", password=PASSWORD), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    with secure(address, pki["stranger"].ca) as untrusted, pytest.raises(grpc.RpcError) as refused:
        pb_grpc.UserServiceStub(untrusted).Login(pb.LoginRequest(username="owner", password=PASSWORD), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # the pool's certificate is not trusted


def test_both_links_over_tls_end_to_end(pool: RunningPool, pki: dict[str, Pki], db: redis.Redis, redis_base: str) -> None:
    add_worker(db, cpus=4, memory_mb=8192)
    settings = Settings(
        redis_url=f"{redis_base}/{TLS_DB}",
        username="site1",
        password=PASSWORD,
        nodepool_address=f"localhost:{pool.port}",
        nodepool_ca_file=str(pki["pool"].ca),
        bridge_tls_cert_file=str(pki["bridge"].cert),
        bridge_tls_key_file=str(pki["bridge"].key),
        bridge_port=0,
        bridge_bind="127.0.0.1",
        heartbeat_interval=0.2,
        registration_interval=0.5,
        relay_interval=0.1,
    )
    bridge = Bridge(settings).start()
    try:
        store = pool.pool.store
        wait_for(
            lambda: (store.conn.execute("SELECT status FROM nodes WHERE node_id = 'site1'").fetchone() or [None])[0] == "Idle",
            what="the bridge logged in and reporting Idle over TLS",
        )
        # The bridge's own port speaks TLS only.
        with grpc.insecure_channel(f"127.0.0.1:{bridge.port}") as plain, pytest.raises(grpc.RpcError) as caught:
            pb_grpc.WorkerNodeServiceStub(plain).StopTaskExecution(pb.StopTaskExecutionRequest(task_id="x"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        # The pool dispatches to the bridge over TLS: the task lands on the bridge's queue.
        with secure(f"localhost:{pool.port}", pki["pool"].ca) as channel:
            owner = login(channel, "owner")
            task_id = new_task_id()
            reply = pb_grpc.MasterNodeServiceStub(channel).UploadTask(
                pb.UploadTaskRequest(task_id=task_id, task_zip=make_zip(), memory_gb=1, cpu_score=100, token=owner), timeout=10
            )
            assert reply.success, reply.message
        wait_for(
            lambda: [m for m in queued(db, "cpu") if m["headers"]["id"] == task_id],
            timeout=30,
            what="the task dispatched over TLS and queued by the bridge",
        )
    finally:
        bridge.stop(grace=0)


def test_pool_refuses_a_bridge_certificate_it_does_not_trust(
    tmp_path: Path, pki: dict[str, Pki], db: redis.Redis, redis_base: str
) -> None:
    """The pool trusts only WORKER_CA_FILE: a bridge with a stranger's certificate gets no task."""
    running = start_pool(
        tmp_path, tls_cert_file=pki["pool"].cert, tls_key_file=pki["pool"].key, worker_ca_file=pki["bridge"].ca, node_backoff_s=30
    )
    add_user(running, "owner", balance=100)
    add_user(running, "site1")
    add_worker(db, cpus=4, memory_mb=8192)
    bridge = Bridge(
        Settings(
            redis_url=f"{redis_base}/{TLS_DB}",
            username="site1",
            password=PASSWORD,
            nodepool_address=f"localhost:{running.port}",
            nodepool_ca_file=str(pki["pool"].ca),
            bridge_tls_cert_file=str(pki["stranger"].cert),
            bridge_tls_key_file=str(pki["stranger"].key),
            bridge_port=0,
            bridge_bind="127.0.0.1",
            heartbeat_interval=0.2,
            registration_interval=0.5,
        )
    ).start()
    try:
        store = running.pool.store
        wait_for(
            lambda: (store.conn.execute("SELECT status FROM nodes WHERE node_id = 'site1'").fetchone() or [None])[0] == "Idle",
            what="the bridge reporting Idle",
        )
        with secure(f"localhost:{running.port}", pki["pool"].ca) as channel:
            task_id = new_task_id()
            reply = pb_grpc.MasterNodeServiceStub(channel).UploadTask(
                pb.UploadTaskRequest(
                    task_id=task_id, task_zip=make_zip(), memory_gb=1, cpu_score=100, token=login(channel, "owner")
                ),
                timeout=10,
            )
            assert reply.success, reply.message
        wait_for(
            lambda: store.conn.execute("SELECT attempts FROM tasks WHERE task_id = ?", (task_id,)).fetchone()[0],
            timeout=30,
            what="a dispatch attempt",
        )
        assert queued(db, "cpu") == []
        row = store.conn.execute("SELECT status FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        assert row[0] == "PENDING"
    finally:
        bridge.stop(grace=0)
        running.stop()
