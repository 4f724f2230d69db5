"""The bridge against a real gRPC peer: login, registration, the Idle/busy
heartbeat from the real worker registry, and ExecuteTask / StopTaskExecution
intake down to the messages on the real Redis broker.

The Node Pool side is `RecordingPool` (tests/bridge_kit.py): a real gRPC server on loopback that
answers the worker-facing RPCs the way the HiveMind pool does (tokens checked
like this project's pool) and records every call. It is a peer, not a mock:
the bridge talks to it over the wire exactly as to a pool.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent import futures

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bridge.server import Bridge
from hivemind_celery.core import keys
from tests.bridge_kit import RecordingPool, add_worker, execute, latest_status, queued, stop_task, wait_for
from tests.services_kit import make_zip

pytestmark = pytest.mark.redis

# The bridge modules keep fixed databases of their own (conftest numbers the
# others from 16 up, per pytest process): parallel runs by other people would
# otherwise share queues with them, and their workers would take our tasks.
BRIDGE_DB = 62


@pytest.fixture(scope="module")
def redis_url(redis_base: str) -> str:
    return f"{redis_base}/{BRIDGE_DB}"


# -- session: login, registration, heartbeat -----------------------------------
def test_login_register_and_status_follow_the_registry(
    start_bridge: Callable[..., Bridge], pool: RecordingPool, db: redis.Redis
) -> None:
    bridge = start_bridge()
    node_id = bridge.config.node_id
    wait_for(lambda: latest_status(pool) == "No workers", "status 'No workers' with no live worker")
    logins = pool.of("Login")
    assert [login.username for login in logins] == [node_id]
    # Nothing registered before a worker is live: zeros would shrink the deployed pool's books for good.
    assert pool.of("RegisterWorkerNode") == []

    registry = add_worker(db, cpus=4, memory_mb=8192)
    wait_for(lambda: latest_status(pool) == "Idle", "status exactly 'Idle' once a worker with room is live")
    registration = pool.of("RegisterWorkerNode")[0]
    assert (registration.node_id, registration.hostname, registration.port) == (node_id, "localhost", bridge.port)
    assert registration.docker_status == "enabled"
    # Our own pool needs the token on the two RPCs whose messages have no token field.
    for name in ("RegisterWorkerNode", "ReportStatus"):
        assert all(md["authorization"].startswith("Bearer ey") for md in pool.metadata_of(name))

    assert (registration.cpu_cores, registration.cpu_score, registration.memory_gb) == (4, 400, 8)

    registry.allocate("someone-else", 3.5, 1024, ttl=600)  # leaves half a core
    wait_for(lambda: latest_status(pool) == "Full", "a busy status once less than a core is free")
    usage = wait_for(lambda: [u for u in pool.of("TaskUsage", "0") if u.cpu_usage > 80], "node usage under id 0")
    assert usage[-1].cpu_usage == pytest.approx(87.5)
    assert usage[-1].token == node_id  # where the deployed pool looks the node up
    assert (pool.of("RegisterWorkerNode")[-1].cpu_score, pool.of("RegisterWorkerNode")[-1].memory_gb) == (400, 8)
    registry.release("someone-else")
    wait_for(lambda: latest_status(pool) == "Idle", "Idle again after the allocation was released")


def test_wrong_password_keeps_retrying_without_crashing(
    start_bridge: Callable[..., Bridge], pool: RecordingPool, caplog: pytest.LogCaptureFixture
) -> None:
    bridge = start_bridge(password="not-the-password")
    wait_for(lambda: len(pool.of("Login")) >= 2, "a second login attempt after the refusal")
    assert pool.of("ReportStatus") == []
    assert bridge.heartbeat is not None and bridge.heartbeat._thread is not None
    assert bridge.heartbeat._thread.is_alive()
    assert "not-the-password" not in caplog.text


def test_token_is_refreshed_before_it_expires(start_bridge: Callable[..., Bridge], pool: RecordingPool) -> None:
    pool.token_lifetime = 31.0  # refreshed 30 s before expiry: at once
    start_bridge()
    wait_for(lambda: pool.of("RefreshToken"), "a RefreshToken call")
    wait_for(lambda: len(pool.of("ReportStatus")) >= 3, "heartbeats with the refreshed token")


def test_pool_forgetting_the_token_means_login_again(start_bridge: Callable[..., Bridge], pool: RecordingPool) -> None:
    start_bridge()
    wait_for(lambda: pool.of("ReportStatus"), "a first heartbeat")
    with pool._lock:
        pool.tokens.clear()  # like a pool restarted with a new signing key
    wait_for(lambda: len(pool.of("Login")) >= 2, "a new login after UNAUTHENTICATED")
    count = len(pool.of("ReportStatus"))
    wait_for(lambda: len(pool.of("ReportStatus")) > count + 2, "heartbeats accepted again")


# -- who may call ---------------------------------------------------------------------
def test_unknown_caller_is_refused_but_health_answers(
    start_bridge: Callable[..., Bridge], db: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    add_worker(db)
    bridge = start_bridge(bridge_allowed_callers="10.9.9.9")
    with pytest.raises(grpc.RpcError) as refused:
        execute(bridge, "t-unknown-caller")
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "not allowed" in refused.value.details()
    # The deployed pool shows a refusal to nobody: the operator reads it in the bridge's log.
    [line] = [r for r in caplog.records if r.name == "bridge.callers" and "ExecuteTask" in r.getMessage()]
    assert line.levelname == "WARNING" and "127.0.0.1" in line.getMessage() and "127.0.0.1" in line.peer
    with pytest.raises(grpc.RpcError) as stop_refused:
        stop_task(bridge, "t-unknown-caller")
    assert stop_refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert queued(db, "cpu") == []
    with grpc.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="nodepool.WorkerNodeService"), timeout=10
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_shared_secret_is_required_when_set(start_bridge: Callable[..., Bridge], db: redis.Redis) -> None:
    add_worker(db)
    bridge = start_bridge(bridge_secret="s3cret-value")
    with pytest.raises(grpc.RpcError) as refused:
        execute(bridge, "t-no-secret")
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError):
        execute(bridge, "t-wrong-secret", metadata=(("x-hivemind-secret", "guess"),))
    reply = execute(bridge, "t-with-secret", metadata=(("x-hivemind-secret", "s3cret-value"),))
    assert reply.success, reply.message
    assert [m["headers"]["id"] for m in queued(db, "cpu")] == ["t-with-secret"]


# -- intake --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("task_id", "zip_bytes", "resources", "reason"),
    [
        ("bad id/..", None, {}, "invalid task id"),
        ("t-neg", None, {"cpu_usage": -100.0}, "cpu_usage must not be negative"),
        ("t-negmem", None, {"memory_gb": -1}, "memory_gb must not be negative"),
        ("t-nan", None, {"gpu_usage": float("nan")}, "gpu_usage must be a finite number"),
        ("t-notzip", b"MZ this is not a zip", {}, "bad task zip"),
        ("t-empty", b"", {}, "task zip is empty"),
        ("t-traversal", make_zip({"../../etc/cron.d/x": "boom"}), {}, "bad task zip"),
        ("t-noentry", make_zip({"README.md": "nothing to run"}), {}, "no entry point"),
        ("t-huge", make_zip({"main.py": "#" * 10}) + b"\0" * (300 * 1024), {}, "above this site's limit"),
        ("t-toomany", None, {"cpu_usage": 1e7}, "at most"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(
    start_bridge: Callable[..., Bridge], db: redis.Redis, task_id: str, zip_bytes: bytes | None, resources: dict, reason: str
) -> None:
    registry = add_worker(db)
    bridge = start_bridge(payload_max_bytes=256 * 1024)
    before = registry.capacity()
    reply = execute(bridge, task_id, zip_bytes, **resources)
    assert not reply.success
    assert reason in reply.message
    assert queued(db, "cpu") == [] and queued(db, "gpu") == []
    assert registry.capacity() == before
    assert bridge.outbox.count() == 0


def test_accepted_task_is_queued_once_on_cpu(start_bridge: Callable[..., Bridge], db: redis.Redis) -> None:
    registry = add_worker(db, cpus=4, memory_mb=8192)
    bridge = start_bridge()
    reply = execute(bridge, "t-cpu-1", cpu_usage=250.0, memory_gb=2)
    assert reply.success, reply.message
    messages = queued(db, "cpu")
    assert [m["headers"]["id"] for m in messages] == ["t-cpu-1"]
    assert messages[0]["headers"]["task"] == "hivemind.run_task"
    assert queued(db, "gpu") == []
    capacity = registry.capacity()
    assert (capacity.cpus_free, capacity.memory_mb_free) == (1.5, 6144)
    assert bridge.outbox.owes("t-cpu-1")

    again = execute(bridge, "t-cpu-1", cpu_usage=250.0, memory_gb=2)
    assert again.success and "already accepted" in again.message
    assert len(queued(db, "cpu")) == 1
    assert registry.capacity().cpus_free == 1.5


def test_message_carries_the_task_spec(start_bridge: Callable[..., Bridge], db: redis.Redis) -> None:
    add_worker(db)
    bridge = start_bridge()
    zip_bytes = make_zip({"main.py": "print(42)"})
    assert execute(bridge, "t-spec", zip_bytes, cpu_usage=100.0, memory_gb=1).success
    import base64

    body = json.loads(base64.b64decode(queued(db, "cpu")[0]["body"]))
    spec = body[0][0]
    assert (spec["task_id"], spec["cpus"], spec["memory_mb"], spec["gpus"]) == ("t-spec", 1.0, 1024, 0)
    assert bridge.payloads.get(spec["payload"]) == zip_bytes


def test_gpu_task_goes_to_gpu_never_cpu(start_bridge: Callable[..., Bridge], db: redis.Redis) -> None:
    add_worker(db, "cpu-only", cpus=8, memory_mb=16384)
    bridge = start_bridge()
    refused = execute(bridge, "t-gpu-nogpu", gpu_usage=100.0, gpu_memory_gb=4)
    assert not refused.success and refused.message.startswith("no GPU on this site"), refused.message
    add_worker(db, "gpu-box", cpus=8, memory_mb=16384, gpus=1, gpu_memory_mb=16384, queues=("gpu",))
    reply = execute(bridge, "t-gpu-1", gpu_usage=100.0, gpu_memory_gb=4)
    assert reply.success, reply.message
    assert [m["headers"]["id"] for m in queued(db, "gpu")] == ["t-gpu-1"]
    assert queued(db, "cpu") == []


def test_full_site_refuses_and_reports_busy(start_bridge: Callable[..., Bridge], db: redis.Redis, pool: RecordingPool) -> None:
    add_worker(db, cpus=1, memory_mb=2048)
    bridge = start_bridge()
    assert execute(bridge, "t-fill").success
    second = execute(bridge, "t-overflow")
    assert not second.success and second.message.startswith("site full: 1 CPUs"), second.message
    assert "free: 0 CPUs" in second.message
    wait_for(lambda: latest_status(pool) == "Running (1 tasks)", "a busy status while the site is full")
    assert [m["headers"]["id"] for m in queued(db, "cpu")] == ["t-fill"]


def test_concurrent_duplicates_are_sent_once(start_bridge: Callable[..., Bridge], db: redis.Redis) -> None:
    add_worker(db, cpus=16, memory_mb=32768)
    bridge = start_bridge()
    with futures.ThreadPoolExecutor(max_workers=6) as pool_:
        replies = list(pool_.map(lambda _: execute(bridge, "t-dup"), range(6)))
    assert all(reply.success for reply in replies)
    assert [m["headers"]["id"] for m in queued(db, "cpu")] == ["t-dup"]


def test_stop_task_execution(start_bridge: Callable[..., Bridge], db: redis.Redis) -> None:
    add_worker(db)
    bridge = start_bridge()
    assert execute(bridge, "t-stop").success
    reply = stop_task(bridge, "t-stop")
    assert reply.success
    assert db.exists(keys.task_stop("t-stop"))
    unknown = stop_task(bridge, "t-never-seen")
    assert not unknown.success and "not running on this node" in unknown.message
    invalid = stop_task(bridge, "../x")
    assert not invalid.success and "invalid task id" in invalid.message
