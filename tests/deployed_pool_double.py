"""A stand-in for the deployed HiveMind Node Pool, for tests and benchmarks.

The deployed pool (the original Python pool, late 2025) cannot be installed
here, so this double is written from the facts in NODEPOOL-PROTOCOL.md and
behaves as they say. It is a real gRPC server on loopback: the bridge talks to
it exactly as to the deployed pool. What it does, fact by fact:

- Login returns an HS256 JWT (user id, username, expiry); worker RPCs check no
  token at all (only the owner's calls need one).
- RegisterWorkerNode refuses nothing but keeps its own `available_*` per node:
  a new node starts with its totals; a re-registration replaces the totals and
  keeps `available_*`, clamped to the new totals.
- Dispatch runs on a timer (`round_s`; the deployed pool ~10 s): pending tasks,
  oldest first, go to nodes whose status is exactly `Idle`, heard from within
  180 s, whose host is neither `127.0.0.1` nor empty, and whose `available_*`
  cover the request (`gpu_name` must match unless empty or `Any`). The request
  is taken off `available_*` and ExecuteTask is called (deadline 30 s + size).
  On success the task is RUNNING and the node's status becomes `BUSY`, so it
  gets nothing more until its next `ReportStatus` with `Idle` (within a round
  too: one task per node per round at most). On a refusal or a gRPC error the
  request goes back, the pool notes it in its own log (`refusals`) and the task
  stays PENDING with no message for its owner.
- TaskUsage with task_id "0" looks the node up by the request's `token` field
  and answers success=false ("node … does not exist") when that is not a node id.
- TaskResultUpload marks the task COMPLETED whatever happened (no success flag),
  and gives the request back to `available_*`, capped at the node's totals (on
  every result that arrives, a repeated one too).
- A RUNNING task fails when its node has been silent over 60 s (120 s while its
  status contains `Running` or `Executing`).

It also records what a test needs to see: every registration and status
report with its time, the node-usage answers, each dispatch round (pending
count, the node's status and `available_*` at that moment, what was sent), and
each task's RUNNING and result times.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import jwt

from proto import nodepool_pb2 as pb
from proto import nodepool_pb2_grpc as pb_grpc

SIGNING_KEY = "deployed-pool-double-signing-key-0123456789"
TOKEN_LIFETIME_S = 3600.0
REFUSED_HOSTS = {"", "127.0.0.1"}
FRESH_S = 180.0
SILENT_S, BUSY_SILENT_S = 60.0, 120.0
OUTPUT_KEEP = 10 * 1024
FIELDS = ("memory_gb", "cpu_score", "gpu_score", "gpu_memory_gb")


@dataclass
class NodeState:
    node_id: str
    hostname: str
    port: int
    total: dict[str, int]
    available: dict[str, int]
    gpu_name: str = ""
    status: str = ""
    last_heartbeat: float = 0.0


@dataclass
class TaskState:
    task_id: str
    owner: str
    zip_bytes: bytes
    request: dict[str, int]
    gpu_name: str
    uploaded_at: float
    status: str = "PENDING"
    node_id: str = ""
    message: str = ""
    running_at: float | None = None
    result_at: float | None = None
    result_zip: bytes = b""
    output: str = ""
    cpu_usage: float = 0.0
    memory_usage: float = 0.0


@dataclass
class Round:
    at: float
    pending: int
    nodes: dict[str, tuple[str, dict[str, int]]]  # node -> (status, available) as the round found them
    sent: list[str] = field(default_factory=list)


class DeployedPoolDouble:
    def __init__(self, users: dict[str, str], round_s: float = 10.0) -> None:
        self.users = dict(users)  # username -> password
        self.round_s = round_s
        self.nodes: dict[str, NodeState] = {}
        self.tasks: dict[str, TaskState] = {}
        self.registrations: list[tuple[float, pb.RegisterWorkerNodeRequest]] = []
        self.reports: list[tuple[float, str, str]] = []  # (time, node_id, status)
        self.node_usage: list[tuple[float, bool, str]] = []  # (time, success, message)
        self.rounds: list[Round] = []
        self.refusals: list[tuple[float, str, str, str]] = []  # (time, task, node, reason): the pool's own log
        self.lock = threading.RLock()
        self.port = 0
        self._server: grpc.Server | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._rounds, name="double-dispatch", daemon=True)

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> DeployedPoolDouble:
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16),
            options=[("grpc.max_receive_message_length", 200 * 1024 * 1024), ("grpc.max_send_message_length", 200 * 1024 * 1024)],
        )
        pb_grpc.add_UserServiceServicer_to_server(_Users(self), server)
        pb_grpc.add_NodeManagerServiceServicer_to_server(_Nodes(self), server)
        pb_grpc.add_MasterNodeServiceServicer_to_server(_Master(self), server)
        pb_grpc.add_WorkerNodeServiceServicer_to_server(_Workers(self), server)
        self.port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.stop(0).wait()
        self._thread.join(timeout=60)

    @property
    def address(self) -> str:
        return f"localhost:{self.port}"

    # -- tokens ------------------------------------------------------------
    def issue(self, username: str) -> str:
        now = time.time()
        return jwt.encode(
            {"user_id": username, "username": username, "exp": now + TOKEN_LIFETIME_S, "jti": uuid.uuid4().hex},
            SIGNING_KEY,
            algorithm="HS256",
        )

    def user_of(self, token: str) -> str | None:
        try:
            return str(jwt.decode(token, SIGNING_KEY, algorithms=["HS256"])["username"])
        except (jwt.PyJWTError, KeyError):
            return None

    # -- dispatch ----------------------------------------------------------
    def _rounds(self) -> None:
        while not self._stop.wait(self.round_s):
            try:
                self.run_round()
            except Exception as exc:  # noqa: BLE001 - like the deployed loop, a bad round is logged
                with self.lock:
                    self.refusals.append((time.time(), "", "", f"round failed: {exc!r}"))

    def run_round(self) -> None:
        now = time.time()
        with self.lock:
            self._fail_silent(now)
            pending = sorted((t for t in self.tasks.values() if t.status == "PENDING"), key=lambda t: t.uploaded_at)
            record = Round(now, len(pending), {n.node_id: (n.status, dict(n.available)) for n in self.nodes.values()})
            self.rounds.append(record)
        for task in pending:
            with self.lock:
                node = next((n for n in self.nodes.values() if self._fits(task, n, now)), None)
                if node is None:
                    continue
                for name in FIELDS:
                    node.available[name] -= task.request[name]
            accepted, reason = self._execute(node, task)
            with self.lock:
                if accepted:
                    task.status, task.node_id, task.running_at = "RUNNING", node.node_id, time.time()
                    node.status = "BUSY"  # until the node's next Idle report
                    record.sent.append(task.task_id)
                else:
                    for name in FIELDS:
                        node.available[name] = min(node.total[name], node.available[name] + task.request[name])
                    self.refusals.append((time.time(), task.task_id, node.node_id, reason))

    def _fits(self, task: TaskState, node: NodeState, now: float) -> bool:
        if node.status != "Idle" or now - node.last_heartbeat > FRESH_S or node.hostname.strip() in REFUSED_HOSTS:
            return False
        if any(task.request[name] > node.available[name] for name in FIELDS):
            return False
        wanted = task.gpu_name.strip().lower()
        return wanted in ("", "any") or wanted in node.gpu_name.lower()

    def _execute(self, node: NodeState, task: TaskState) -> tuple[bool, str]:
        deadline = min(120.0, 30.0 + len(task.zip_bytes) / (1024 * 1024))
        try:
            with grpc.insecure_channel(
                f"{node.hostname}:{node.port}", options=[("grpc.max_send_message_length", 200 * 1024 * 1024)]
            ) as channel:
                reply = pb_grpc.WorkerNodeServiceStub(channel).ExecuteTask(
                    pb.ExecuteTaskRequest(
                        task_id=task.task_id,
                        task_zip=task.zip_bytes,
                        cpu_usage=float(task.request["cpu_score"]),
                        gpu_usage=float(task.request["gpu_score"]),
                        memory_gb=task.request["memory_gb"],
                        gpu_memory_gb=task.request["gpu_memory_gb"],
                    ),
                    timeout=deadline,
                )  # no secret: it sends none
        except grpc.RpcError as exc:
            return False, f"{exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
        return reply.success, reply.message

    def _fail_silent(self, now: float) -> None:
        for task in self.tasks.values():
            node = self.nodes.get(task.node_id)
            if task.status != "RUNNING" or node is None:
                continue
            limit = BUSY_SILENT_S if ("Running" in node.status or "Executing" in node.status) else SILENT_S
            if now - node.last_heartbeat > limit:
                task.status, task.message = "FAILED", f"node {node.node_id} silent"

    # -- what tests read ---------------------------------------------------
    def node(self, node_id: str) -> NodeState:
        with self.lock:
            return self.nodes[node_id]

    def report_times(self, node_id: str) -> list[float]:
        with self.lock:
            return [at for at, node, _ in self.reports if node == node_id]


class _Users(pb_grpc.UserServiceServicer):
    def __init__(self, pool: DeployedPoolDouble) -> None:
        self.pool = pool

    def Login(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC names
        if self.pool.users.get(request.username) != request.password:
            return pb.LoginResponse(success=False, message="Invalid username or password")
        return pb.LoginResponse(success=True, message="Login successful", token=self.pool.issue(request.username))

    def RefreshToken(self, request: Any, context: Any) -> Any:  # noqa: N802
        user = self.pool.user_of(request.old_token)
        if user is None:
            return pb.RefreshTokenResponse(success=False, message="Invalid token")
        return pb.RefreshTokenResponse(success=True, message="Token refreshed", new_token=self.pool.issue(user))


class _Nodes(pb_grpc.NodeManagerServiceServicer):
    def __init__(self, pool: DeployedPoolDouble) -> None:
        self.pool = pool

    def RegisterWorkerNode(self, request: Any, context: Any) -> Any:  # noqa: N802
        copy = pb.RegisterWorkerNodeRequest()
        copy.CopyFrom(request)
        total = {name: int(getattr(request, name)) for name in FIELDS}
        with self.pool.lock:
            self.pool.registrations.append((time.time(), copy))
            node = self.pool.nodes.get(request.node_id)
            if node is None:
                node = NodeState(request.node_id, request.hostname, request.port, total, dict(total))
                self.pool.nodes[request.node_id] = node
            else:  # the totals are replaced, available_* kept and clamped to them
                node.total = total
                node.available = {name: min(node.available[name], total[name]) for name in FIELDS}
            node.hostname, node.port, node.gpu_name = request.hostname, request.port, request.gpu_name
            node.last_heartbeat = time.time()
        return pb.StatusResponse(success=True, message="Worker node registered")

    def ReportStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
        with self.pool.lock:
            node = self.pool.nodes.get(request.node_id)
            if node is None:
                return pb.RunningStatusResponse(success=False, message=f"node {request.node_id} does not exist")
            node.status, node.last_heartbeat = request.status, time.time()
            self.pool.reports.append((node.last_heartbeat, request.node_id, request.status))
        return pb.RunningStatusResponse(success=True, message="Status updated")


class _Master(pb_grpc.MasterNodeServiceServicer):
    def __init__(self, pool: DeployedPoolDouble) -> None:
        self.pool = pool

    def _owner(self, token: str) -> str | None:
        return self.pool.user_of(token)

    def UploadTask(self, request: Any, context: Any) -> Any:  # noqa: N802
        owner = self._owner(request.token)
        if owner is None:
            return pb.UploadTaskResponse(success=False, message="Invalid token")
        with self.pool.lock:
            if request.task_id in self.pool.tasks:
                return pb.UploadTaskResponse(success=False, message="Task already exists")
            self.pool.tasks[request.task_id] = TaskState(
                request.task_id,
                owner,
                bytes(request.task_zip),
                {name: int(getattr(request, name)) for name in FIELDS},
                request.gpu_name,
                time.time(),
            )
        return pb.UploadTaskResponse(success=True, message="Task uploaded")

    def GetTaskResult(self, request: Any, context: Any) -> Any:  # noqa: N802
        with self.pool.lock:
            task = self.pool.tasks.get(request.task_id)
            if task is None or task.owner != self._owner(request.token) or not task.result_zip:
                return pb.GetTaskResultResponse(success=False, message="No result")
            return pb.GetTaskResultResponse(success=True, message=task.status, result_zip=task.result_zip)

    def GetAllUserTasks(self, request: Any, context: Any) -> Any:  # noqa: N802
        owner = self._owner(request.token)
        with self.pool.lock:
            return pb.GetAllTasksResponse(
                tasks=[
                    pb.TaskInfo(
                        task_id=t.task_id,
                        status=t.status,
                        message=t.message,
                        cpu_usage=t.cpu_usage,
                        memory_usage=t.memory_usage,
                        worker_ip=t.node_id,
                    )
                    for t in self.pool.tasks.values()
                    if t.owner == owner
                ]
            )

    def GetTasklog(self, request: Any, context: Any) -> Any:  # noqa: N802
        with self.pool.lock:
            task = self.pool.tasks.get(request.task_id)
            return pb.TasklogResponse(success=task is not None, log=task.output if task else "")


class _Workers(pb_grpc.WorkerNodeServiceServicer):
    """The four RPCs the pool serves to workers; no token is checked on any."""

    def __init__(self, pool: DeployedPoolDouble) -> None:
        self.pool = pool

    def _output(self, task_id: str, output: str) -> bool:
        with self.pool.lock:
            task = self.pool.tasks.get(task_id)
            if task is None:
                return False
            task.output = (task.output + output)[-OUTPUT_KEEP:]
            return True

    def TaskOutputUpload(self, request: Any, context: Any) -> Any:  # noqa: N802
        ok = self._output(request.task_id, request.output)
        return pb.TaskOutputUploadResponse(success=ok, message="ok" if ok else "Task not found")

    def TaskOutput(self, request: Any, context: Any) -> Any:  # noqa: N802
        ok = self._output(request.task_id, request.output)
        return pb.TaskOutputResponse(success=ok, message="ok" if ok else "Task not found")

    def TaskUsage(self, request: Any, context: Any) -> Any:  # noqa: N802
        with self.pool.lock:
            if request.task_id == "0":  # node-level: the node id is read from `token`
                known = request.token in self.pool.nodes
                message = "ok" if known else f"node {request.token[:40]} does not exist"
                self.pool.node_usage.append((time.time(), known, message))
                return pb.TaskUsageResponse(success=known, message=message)
            task = self.pool.tasks.get(request.task_id)
            if task is None:
                return pb.TaskUsageResponse(success=False, message="Task not found")
            task.cpu_usage, task.memory_usage = request.cpu_usage, request.memory_usage
        return pb.TaskUsageResponse(success=True, message="ok")

    def TaskResultUpload(self, request: Any, context: Any) -> Any:  # noqa: N802
        with self.pool.lock:
            task = self.pool.tasks.get(request.task_id)
            if task is None:
                return pb.TaskResultUploadResponse(success=False, message="Task not found")
            task.status, task.result_zip = "COMPLETED", bytes(request.result_zip)  # whatever happened
            task.result_at = task.result_at or time.time()
            node = self.pool.nodes.get(task.node_id)
            if node is not None:  # on every result, a repeated one too, capped at the totals
                for name in FIELDS:
                    node.available[name] = min(node.total[name], node.available[name] + task.request[name])
        return pb.TaskResultUploadResponse(success=True, message="Result uploaded")
