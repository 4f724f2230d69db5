"""The bridge's side of tests: `RecordingPool`, a real gRPC Node Pool on loopback
that records every call, and helpers to drive a real bridge (settings, a worker
in the real registry, ExecuteTask/StopTaskExecution calls, the queued Celery
messages, a worker's end of a task).

The Node Pool side is a peer, not a mock: the bridge talks to it over the wire
exactly as to a pool. The fixtures built on these live in tests/bridge/conftest.py.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
import jwt
import pytest
import redis

from bridge.server import Bridge
from hivemind_celery.core.model import TaskOutcome, TaskStatus
from hivemind_celery.core.settings import Settings
from hivemind_celery.payloads.store import PayloadStore
from hivemind_celery.site.registry import Registry, WorkerCapacity
from hivemind_celery.task.outcomes import rejected_outcome
from hivemind_celery.task.result import store_result
from proto import nodepool_pb2 as pb
from proto import nodepool_pb2_grpc as pb_grpc
from tests.services_kit import make_zip

PASSWORD = "site-password-1"
SIGNING_KEY = "recording-pool-signing-key-0123456789"


class RecordingPool:
    """A Node Pool for tests: answers Login/RefreshToken, RegisterWorkerNode,
    ReportStatus, TaskOutputUpload, TaskUsage, TaskResultUpload, and records
    (rpc name, request, metadata) of every call."""

    def __init__(self, token_lifetime: float = 3600.0) -> None:
        self.calls: list[tuple[str, Any, dict[str, str]]] = []  # accepted calls
        self.refused: list[tuple[str, Any, dict[str, str]]] = []  # bad or missing token
        self.tokens: set[str] = set()
        self.token_lifetime = token_lifetime
        self.refuse_results = 0  # how many TaskResultUploads to answer success=false
        self.refuse_node_usage = False  # answer node-level TaskUsage success=false
        self.port = 0
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> RecordingPool:
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8),
            options=[("grpc.max_receive_message_length", 200 * 1024 * 1024)],
        )
        pool = self

        class Users(pb_grpc.UserServiceServicer):
            def Login(self, request: Any, context: Any) -> Any:
                pool._record("Login", request, context)
                if request.password != PASSWORD:
                    return pb.LoginResponse(success=False, message="wrong username or password")
                return pb.LoginResponse(success=True, message="ok", token=pool._issue(request.username))

            def RefreshToken(self, request: Any, context: Any) -> Any:
                pool._record("RefreshToken", request, context)
                if request.old_token not in pool.tokens:
                    return pb.RefreshTokenResponse(success=False, message="invalid token")
                claims = jwt.decode(request.old_token, SIGNING_KEY, algorithms=["HS256"], options={"verify_exp": False})
                return pb.RefreshTokenResponse(success=True, new_token=pool._issue(claims["username"]))

        class Nodes(pb_grpc.NodeManagerServiceServicer):
            def RegisterWorkerNode(self, request: Any, context: Any) -> Any:
                pool._record("RegisterWorkerNode", request, context, check_token=True)
                return pb.StatusResponse(success=True, message="registered")

            def ReportStatus(self, request: Any, context: Any) -> Any:
                pool._record("ReportStatus", request, context, check_token=True)
                return pb.RunningStatusResponse(success=True, message="ok")

        class Workers(pb_grpc.WorkerNodeServiceServicer):
            def TaskOutputUpload(self, request: Any, context: Any) -> Any:
                pool._record("TaskOutputUpload", request, context, check_token=True)
                return pb.TaskOutputUploadResponse(success=True)

            def TaskUsage(self, request: Any, context: Any) -> Any:
                # Node-level usage carries the node id in `token`, as the deployed pool reads it.
                pool._record("TaskUsage", request, context, check_token=True, node_field=request.task_id == "0")
                if request.task_id == "0" and pool.refuse_node_usage:
                    return pb.TaskUsageResponse(success=False, message=f"node {request.token} does not exist")
                return pb.TaskUsageResponse(success=True)

            def TaskResultUpload(self, request: Any, context: Any) -> Any:
                pool._record("TaskResultUpload", request, context, check_token=True)
                with pool._lock:
                    if pool.refuse_results > 0:
                        pool.refuse_results -= 1
                        return pb.TaskResultUploadResponse(success=False, message="result refused for the test")
                return pb.TaskResultUploadResponse(success=True, message="stored")

        pb_grpc.add_UserServiceServicer_to_server(Users(), server)
        pb_grpc.add_NodeManagerServiceServicer_to_server(Nodes(), server)
        pb_grpc.add_WorkerNodeServiceServicer_to_server(Workers(), server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0).wait()
            self._server = None

    # -- internals ---------------------------------------------------------
    def _issue(self, username: str) -> str:
        now = time.time()
        token = jwt.encode(
            {"sub": username, "username": username, "iat": now, "exp": now + self.token_lifetime, "jti": uuid.uuid4().hex},
            SIGNING_KEY,
            algorithm="HS256",
        )
        with self._lock:
            self.tokens.add(token)
        return token

    def _record(self, name: str, request: Any, context: Any, check_token: bool = False, node_field: bool = False) -> None:
        metadata = {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}
        copy = type(request)()
        copy.CopyFrom(request)
        if check_token:
            token = metadata.get("authorization", "").removeprefix("Bearer ")
            expected = token
            if node_field and token in self.tokens:
                expected = jwt.decode(token, SIGNING_KEY, algorithms=["HS256"])["username"]
            field_token = getattr(request, "token", expected)
            if token not in self.tokens or field_token != expected:
                with self._lock:
                    self.refused.append((name, copy, metadata))
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid or missing token")
        with self._lock:
            self.calls.append((name, copy, metadata))

    # -- queries -----------------------------------------------------------
    def of(self, name: str, task_id: str | None = None) -> list[Any]:
        with self._lock:
            return [req for rpc, req, _ in self.calls if rpc == name and (task_id is None or req.task_id == task_id)]

    def metadata_of(self, name: str) -> list[dict[str, str]]:
        with self._lock:
            return [md for rpc, _, md in self.calls if rpc == name]


def wait_for(condition: Callable[[], Any], what: str, limit: float = 30.0) -> Any:
    """Poll until condition() is truthy; fail naming what never happened.
    (A wait with a generous limit, not a speed check.)"""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"never happened within {limit:.0f}s: {what}")


def bridge_settings(redis_url: str, pool: RecordingPool, **values: Any) -> Settings:
    base: dict[str, Any] = {
        "redis_url": redis_url,
        "username": f"site-{uuid.uuid4().hex[:8]}",
        "password": PASSWORD,
        "nodepool_address": f"localhost:{pool.port}",
        "bridge_port": 0,
        "bridge_bind": "127.0.0.1",
        "heartbeat_interval": 0.2,
        "registration_interval": 0.5,
        "relay_interval": 0.1,
    }
    base.update(values)
    return Settings(**base)


def add_worker(
    db: redis.Redis,
    worker_id: str = "w1",
    cpus: float = 4,
    memory_mb: int = 8192,
    gpus: int = 0,
    gpu_memory_mb: int = 0,
    queues: tuple[str, ...] = ("cpu",),
) -> Registry:
    registry = Registry(db)
    registry.register(
        WorkerCapacity(
            worker_id=worker_id,
            hostname="test-host",
            cpus=cpus,
            memory_mb=memory_mb,
            gpus=gpus,
            gpu_memory_mb=gpu_memory_mb,
            gpu_names=["Test GPU"] * gpus,
            queues=list(queues),
        ),
        ttl=600,
    )
    return registry


def execute(bridge: Bridge, task_id: str, zip_bytes: bytes | None = None, metadata: tuple = (), **resources: Any) -> Any:
    with grpc.insecure_channel(
        f"127.0.0.1:{bridge.port}", options=[("grpc.max_send_message_length", 200 * 1024 * 1024)]
    ) as channel:
        stub = pb_grpc.WorkerNodeServiceStub(channel)
        request = pb.ExecuteTaskRequest(
            task_id=task_id,
            task_zip=make_zip({"main.py": "print('hello')"}) if zip_bytes is None else zip_bytes,
            **resources,
        )
        return stub.ExecuteTask(request, timeout=30, metadata=metadata)


def stop_task(bridge: Bridge, task_id: str) -> Any:
    with grpc.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        return pb_grpc.WorkerNodeServiceStub(channel).StopTaskExecution(pb.StopTaskExecutionRequest(task_id=task_id), timeout=30)


def queued(db: redis.Redis, queue: str) -> list[dict[str, Any]]:
    """The Celery messages waiting on a queue (kombu's Redis list of JSON)."""
    return [json.loads(raw) for raw in db.lrange(queue, 0, -1)]


def latest_status(pool: RecordingPool) -> str | None:
    reports = pool.of("ReportStatus")
    return reports[-1].status if reports else None


def finish(
    db: redis.Redis, bridge: Bridge, task_id: str, status: TaskStatus = TaskStatus.SUCCEEDED, release: bool = True
) -> TaskOutcome:
    """What a worker does at the end: store the result zip, give the task's room
    back (UsageMeter.complete, via the allocation observer; not when its Redis call failed), return the outcome."""
    outcome = rejected_outcome(task_id, "", "test-worker").model_copy(update={"status": status, "exit_code": 0})
    outcome = store_result(outcome, PayloadStore(db, bridge.settings), bridge.settings)
    if release:
        Registry(db).release(task_id)
    bridge.celery.backend.store_result(task_id, outcome.model_dump(mode="json"), "SUCCESS")
    return outcome
