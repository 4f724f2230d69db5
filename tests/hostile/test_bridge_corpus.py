"""The corpus through the bridge's ExecuteTask intake, over real gRPC on
loopback, with a real Redis broker and the recording pool of
tests/bridge_kit.py as the Node Pool peer.

Every hostile zip, resource request, task id and oversize message is refused
with a message naming what was wrong; nothing reaches a queue, no capacity is
reserved, nothing is owed; afterwards the same bridge takes a good task."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest
import redis

from bridge.server import Bridge
from proto import nodepool_pb2 as pb
from tests.bridge_kit import RecordingPool, add_worker, bridge_settings, execute, queued
from tests.hostile.cases import BAD_TASK_IDS, HEADER_CASES, Case
from tests.services_kit import make_zip

pytestmark = pytest.mark.redis

CORPUS_DB = 58  # fixed, like the other bridge modules (see test_bridge_service.py)
PAYLOAD_MAX = 4 * 1024 * 1024  # the bridge's gRPC limit is this plus 1 MiB


@pytest.fixture(scope="module")
def db(redis_base: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(f"{redis_base}/{CORPUS_DB}")
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="module")
def bridge(redis_base: str, db: redis.Redis) -> Iterator[Bridge]:
    pool = RecordingPool().start()
    running = Bridge(bridge_settings(f"{redis_base}/{CORPUS_DB}", pool, payload_max_bytes=PAYLOAD_MAX)).start()
    yield running
    running.stop(grace=0)
    pool.stop()


@pytest.fixture(scope="module")
def registry(db: redis.Redis):
    return add_worker(db, "corpus-worker", cpus=4, memory_mb=8192)


def refused(bridge: Bridge, db: redis.Redis, registry, task_id: str, zip_bytes: bytes | None = None, **resources: object) -> str:
    before = registry.capacity()
    reply = execute(bridge, task_id, zip_bytes, **resources)
    assert not reply.success, f"{task_id!r} was accepted"
    assert queued(db, "cpu") == [] and queued(db, "gpu") == []
    assert registry.capacity() == before
    assert bridge.outbox.count() == 0
    return reply.message


@pytest.mark.parametrize("case", HEADER_CASES, ids=str)
def test_hostile_zip_refused_at_execute_task(bridge, db, registry, case: Case) -> None:
    message = refused(bridge, db, registry, f"b-{case.name}", case.make())
    assert case.reason.lower() in message.lower(), message


RESOURCE_CASES = [
    ({"cpu_usage": -1.0}, "cpu_usage must not be negative"),
    ({"cpu_usage": float("inf")}, "cpu_usage must be a finite number"),
    ({"cpu_usage": float("nan")}, "cpu_usage must be a finite number"),
    ({"cpu_usage": 3.4e38}, "at most"),
    ({"gpu_usage": -5.0}, "gpu_usage must not be negative"),
    ({"gpu_usage": 1e9}, "at most 64"),
    ({"memory_gb": -1}, "memory_gb must not be negative"),
    ({"memory_gb": 2**31 - 1}, "above this site's limit"),
    ({"gpu_memory_gb": -8}, "gpu_memory_gb must not be negative"),
    ({"gpu_memory_gb": 2**31 - 1}, "beyond any GPU"),
    # A GPU this site does not have (ExecuteTask carries no GPU name; asking for
    # any GPU of a CPU-only site is the request no worker here can take).
    ({"gpu_usage": 100.0, "gpu_memory_gb": 24}, "GPU"),
]


@pytest.mark.parametrize(("resources", "reason"), RESOURCE_CASES, ids=lambda v: str(v)[:40])
def test_hostile_resources_refused(bridge, db, registry, resources: dict, reason: str) -> None:
    assert reason in refused(bridge, db, registry, f"r-{uuid.uuid4().hex[:8]}", **resources)


def _raw_execute(bridge: Bridge, raw: bytes) -> pb.ExecuteTaskResponse:
    with grpc.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        call = channel.unary_unary(
            "/nodepool.WorkerNodeService/ExecuteTask",
            request_serializer=lambda b: b,
            response_deserializer=pb.ExecuteTaskResponse.FromString,
        )
        return call(raw, timeout=30)


@pytest.mark.parametrize(("field", "kind"), [(3, "number"), (5, "whole number")], ids=["cpu_usage", "memory_gb"])
def test_resource_that_is_not_a_number_is_refused(bridge, db, field: int, kind: str) -> None:
    """A number field sent as a string on the wire: protobuf would quietly read 0."""
    good = pb.ExecuteTaskRequest(task_id=f"n-{field}", task_zip=make_zip({"main.py": "print(1)"}))
    raw = good.SerializeToString() + bytes([(field << 3) | 2, 4]) + b"lots"
    reply = _raw_execute(bridge, raw)
    assert not reply.success
    assert f"has the wrong type on the wire (not a {kind})" in reply.message
    assert queued(db, "cpu") == []


def test_malformed_protobuf_is_refused_by_grpc(bridge) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _raw_execute(bridge, b"\x0a\xff\xff\xff\xff\x0f garbage")
    assert caught.value.code() == grpc.StatusCode.INTERNAL  # "Exception deserializing request!"


@pytest.mark.parametrize("task_id", BAD_TASK_IDS, ids=lambda t: repr(t)[:24])
def test_task_id_with_separators_or_metacharacters_refused(bridge, db, registry, task_id: str) -> None:
    assert "invalid task id" in refused(bridge, db, registry, task_id)


def test_oversize_grpc_message_is_refused_before_it_is_read(bridge, db, registry) -> None:
    huge = make_zip({"main.py": "print(1)"}) + b"\0" * (PAYLOAD_MAX + 2 * 1024 * 1024)
    with pytest.raises(grpc.RpcError) as caught:
        execute(bridge, "o-huge", huge)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in caught.value.details()
    # Inside the gRPC limit but above the payload limit: refused by the bridge, by size.
    big = make_zip({"main.py": "print(1)"}) + b"\0" * (PAYLOAD_MAX + 1000)
    assert "above this site's limit" in refused(bridge, db, registry, "o-big", big)


def test_bridge_still_takes_a_good_task_after_the_corpus(bridge, db, registry) -> None:
    """Last in the module: the same bridge, after everything above, queues a good task once."""
    reply = execute(bridge, "good-after-corpus", cpu_usage=100.0, memory_gb=1)
    assert reply.success, reply.message
    assert [m["headers"]["id"] for m in queued(db, "cpu")] == ["good-after-corpus"]
    assert bridge.outbox.owes("good-after-corpus")
