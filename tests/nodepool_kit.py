"""Helpers for the Node Pool tests: a real pool on loopback, a client for it, and a
tiny in-test worker (a real gRPC WorkerNodeService server) that receives ExecuteTask."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nodepool import accounts
from nodepool.server import RunningPool, start
from nodepool.settings import NodePoolSettings
from proto import nodepool_pb2 as pb
from proto import nodepool_pb2_grpc as pb_grpc

TEST_SECRET = "test-secret-0123456789abcdef-0123456789"
PASSWORD = "correct horse battery"


def pool_settings(tmp_path: Path, **overrides: object) -> NodePoolSettings:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": 0,
        "db": tmp_path / "pool.db",
        "secret": TEST_SECRET,
        "dispatch_interval_s": 0.1,
        "node_backoff_s": 0.5,
    }
    values.update(overrides)
    return NodePoolSettings(**values)  # type: ignore[arg-type]


def start_pool(tmp_path: Path, **overrides: object) -> RunningPool:
    return start(pool_settings(tmp_path, **overrides))


@contextmanager
def serving_pool(tmp_path: Path, users: dict[str, int], **overrides: object) -> Iterator[RunningPool]:
    """A started pool holding `users` (name: balance, all with PASSWORD), stopped on exit."""
    running = start_pool(tmp_path, **overrides)
    try:
        for name, balance in users.items():
            add_user(running, name, balance=balance)
        yield running
    finally:
        running.stop()


def make_zip(files: dict[str, str | bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in (files or {"main.py": "print('hello')\n"}).items():
            # A fixed timestamp makes equal files give equal bytes.
            archive.writestr(zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0)), content)
    return buffer.getvalue()


def result_zip(report: dict | None = None, extra: dict[str, str] | None = None) -> bytes:
    files: dict[str, str | bytes] = {"task_logs.txt": "done\n", **(extra or {})}
    if report is not None:
        files["execution_report.json"] = json.dumps(report)
    return make_zip(files)


def new_task_id() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def wait_for(predicate: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> object:
    """Poll until `predicate()` is truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


class Client:
    """Stubs for the four pool services over one channel."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(
            address,
            options=[("grpc.max_send_message_length", 200 * 1024 * 1024), ("grpc.max_receive_message_length", 200 * 1024 * 1024)],
        )
        self.users = pb_grpc.UserServiceStub(self.channel)
        self.nodes = pb_grpc.NodeManagerServiceStub(self.channel)
        self.master = pb_grpc.MasterNodeServiceStub(self.channel)
        self.worker = pb_grpc.WorkerNodeServiceStub(self.channel)

    def login(self, username: str, password: str = PASSWORD) -> str:
        reply = self.users.Login(pb.LoginRequest(username=username, password=password))
        assert reply.success, reply.message
        return reply.token

    def close(self) -> None:
        self.channel.close()


def add_user(running: RunningPool, username: str, balance: int = 0) -> None:
    accounts.create_user(running.pool.store, username, PASSWORD, balance)


@dataclass
class TestWorker:
    """A real WorkerNodeService server on loopback that records what the pool sends it.
    `accept` decides the ExecuteTask answer."""

    __test__ = False  # not a pytest test class
    accept: bool = True
    reason: str = "accepted"
    executed: list[pb.ExecuteTaskRequest] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)
    port: int = 0
    hold: threading.Event | None = None  # when given, ExecuteTask answers only once it is set
    _server: grpc.Server | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> TestWorker:
        worker = self

        class Servicer(pb_grpc.WorkerNodeServiceServicer):
            def ExecuteTask(self, request, context):  # noqa: N802 - gRPC name
                with worker._lock:
                    worker.executed.append(request)
                    worker.metadata.append(dict(context.invocation_metadata()))
                if worker.hold is not None:
                    worker.hold.wait(30)
                return pb.ExecuteTaskResponse(success=worker.accept, message=worker.reason)

            def StopTaskExecution(self, request, context):  # noqa: N802 - gRPC name
                with worker._lock:
                    worker.stopped.append(request.task_id)
                return pb.StopTaskExecutionResponse(success=True, message="stopping")

        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4),
            options=[("grpc.max_receive_message_length", 200 * 1024 * 1024)],
        )
        pb_grpc.add_WorkerNodeServiceServicer_to_server(Servicer(), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0).wait()

    @property
    def executed_ids(self) -> list[str]:
        with self._lock:
            return [r.task_id for r in self.executed]


def register_node(
    client: Client,
    token: str,
    node_id: str,
    port: int,
    status: str = "Idle",
    hostname: str = "127.0.0.1",
    **capacity: int | str,
) -> None:
    values: dict[str, int | str] = {"memory_gb": 8, "cpu_score": 100, "cpu_cores": 4, "docker_status": "enabled"}
    values.update(capacity)
    metadata = (("authorization", f"Bearer {token}"),)
    reply = client.nodes.RegisterWorkerNode(
        pb.RegisterWorkerNodeRequest(node_id=node_id, hostname=hostname, port=port, **values), metadata=metadata
    )
    assert reply.success, reply.message
    reply = client.nodes.ReportStatus(pb.RunningStatusRequest(node_id=node_id, status=status), metadata=metadata)
    assert reply.success, reply.message


def task_status(client: Client, token: str, task_id: str) -> pb.TaskInfo | None:
    reply = client.master.GetAllUserTasks(pb.GetAllUserTasksRequest(token=token))
    return next((t for t in reply.tasks if t.task_id == task_id), None)
