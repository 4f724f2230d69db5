"""A logged-in connection to a Node Pool, as a user sees it: log in, upload a
task, list tasks, read a task's output, fetch its result zip, stop it. Plain
gRPC over the protocol's own stubs, so the CLI and the demo go the way any
user's task goes.

It logs in with the given account (the CLI: HIVEMIND_USERNAME /
HIVEMIND_PASSWORD at HIVEMIND_NODEPOOL_ADDRESS) and keeps the token in memory
only (nothing secret is written to disk); a client that runs long (--wait,
--follow, the demo) logs in again before the token's lifetime is up, and once
more if the pool says the token is no longer good.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from hivemind_celery.core import HivemindError, MiB
from proto import nodepool_pb2 as pb
from proto import nodepool_pb2_grpc as pb_grpc

MAX_MESSAGE_BYTES = 128 * MiB  # above the pool's 100 MB zip limit and the rest of the message
RELOGIN_AFTER_S = 20 * 60  # well inside the pool's default 60-minute token lifetime
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "STOPPED"})


class PoolError(HivemindError):
    """The pool refused or could not be reached; the message says which and why."""


@dataclass(frozen=True)
class TaskState:
    task_id: str
    status: str
    message: str
    cpu_usage: float
    memory_usage: float

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATES


class PoolClient:
    def __init__(self, address: str, username: str, password: str, timeout_s: float = 30.0) -> None:
        if not username or not password:
            raise PoolError("set HIVEMIND_USERNAME and HIVEMIND_PASSWORD to your Node Pool account")
        self.address = address
        self._username = username
        self._password = password
        self._timeout_s = timeout_s
        self._token = ""
        self._logged_in_at = 0.0
        self._channel = grpc.insecure_channel(
            address,
            options=[("grpc.max_send_message_length", MAX_MESSAGE_BYTES), ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)],
        )
        self.users = pb_grpc.UserServiceStub(self._channel)
        self.master = pb_grpc.MasterNodeServiceStub(self._channel)

    @classmethod
    def from_settings(cls) -> PoolClient:
        from hivemind_celery.core import Settings

        settings = Settings()  # fresh, not cached: the environment is the configuration
        return cls(settings.nodepool_address, settings.username, settings.password.get_secret_value())

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> PoolClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def call(self, method: Any, request: Any, timeout_s: float | None = None) -> Any:
        """Call one RPC, turning transport errors into PoolError with a readable reason."""
        try:
            return method(request, timeout=timeout_s or self._timeout_s)
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def _error(self, exc: grpc.RpcError) -> PoolError:
        code = exc.code()  # type: ignore[attr-defined]
        if code == grpc.StatusCode.UNAVAILABLE:
            return PoolError(f"cannot reach the Node Pool at {self.address}: {exc.details()}")  # type: ignore[attr-defined]
        return PoolError(f"{code.name}: {exc.details()}")  # type: ignore[attr-defined]

    def login(self) -> None:
        reply = self.call(self.users.Login, pb.LoginRequest(username=self._username, password=self._password))
        if not reply.success:
            raise PoolError(f"login as {self._username!r} failed: {reply.message}")
        self._token, self._logged_in_at = reply.token, time.monotonic()

    @property
    def token(self) -> str:
        if not self._token or time.monotonic() - self._logged_in_at > RELOGIN_AFTER_S:
            self.login()
        return self._token

    def _with_token(self, method: Any, make_request: Callable[[str], Any], timeout_s: float | None = None) -> Any:
        """Call with the current token; log in again once if the pool no longer takes it."""
        try:
            return method(make_request(self.token), timeout=timeout_s or self._timeout_s)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAUTHENTICATED:  # type: ignore[attr-defined]
                raise self._error(exc) from None
        self.login()
        return self.call(method, make_request(self._token), timeout_s)

    def upload(self, task_id: str, task_zip: bytes, memory_gb: int, cpu_score: int, gpu_score: int = 0) -> None:
        reply = self._with_token(
            self.master.UploadTask,
            lambda token: pb.UploadTaskRequest(
                task_id=task_id, task_zip=task_zip, memory_gb=memory_gb, cpu_score=cpu_score, gpu_score=gpu_score, token=token
            ),
            timeout_s=300,
        )
        if not reply.success:
            raise PoolError(f"upload of {task_id} refused: {reply.message}")

    def tasks(self) -> list[pb.TaskInfo]:
        reply = self._with_token(self.master.GetAllUserTasks, lambda token: pb.GetAllUserTasksRequest(token=token))
        return list(reply.tasks)

    def states(self) -> dict[str, TaskState]:
        """Every task of this account, by id."""
        return {t.task_id: TaskState(t.task_id, t.status, t.message, t.cpu_usage, t.memory_usage) for t in self.tasks()}

    def task(self, task_id: str) -> pb.TaskInfo:
        found = next((t for t in self.tasks() if t.task_id == task_id), None)
        if found is None:
            raise PoolError(f"no task {task_id!r} of yours on the Node Pool")
        return found

    def log(self, task_id: str) -> str:
        reply = self._with_token(self.master.GetTasklog, lambda token: pb.TasklogRequest(task_id=task_id, token=token))
        return reply.log if reply.success else ""

    def result(self, task_id: str) -> bytes | None:
        reply = self._with_token(
            self.master.GetTaskResult, lambda token: pb.GetTaskResultRequest(task_id=task_id, token=token), timeout_s=300
        )
        return reply.result_zip if reply.success else None

    def stop(self, task_id: str) -> str:
        reply = self._with_token(
            self.master.StopTask, lambda token: pb.StopTaskRequest(task_id=task_id, token=token), timeout_s=60
        )
        return reply.message
