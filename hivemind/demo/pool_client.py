"""The Node Pool as a user sees it: log in, upload a task, list tasks, read a
task's output, fetch its result zip, stop it. Plain gRPC over the protocol's
own stubs, so the demo goes the way any user's task goes."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from hivemind_celery.core.errors import HivemindError
from proto import nodepool_pb2 as pb
from proto import nodepool_pb2_grpc as pb_grpc

FINAL_STATES = {"COMPLETED", "FAILED", "STOPPED"}
MAX_MESSAGE = 110 * 1024 * 1024  # a 100 MB result zip and the rest of the message


class PoolError(HivemindError, RuntimeError):
    """The Node Pool said no; the message is its reason."""


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
    def __init__(self, address: str, username: str, password: str) -> None:
        self._channel = grpc.insecure_channel(address, options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
        ])
        self._users = pb_grpc.UserServiceStub(self._channel)
        self._master = pb_grpc.MasterNodeServiceStub(self._channel)
        self._username = username
        self._password = password
        self._token = ""

    def close(self) -> None:
        self._channel.close()

    def login(self) -> None:
        reply = self._users.Login(pb.LoginRequest(username=self._username, password=self._password), timeout=10)
        if not reply.success:
            raise PoolError(f"login as {self._username!r} refused: {reply.message}")
        self._token = reply.token

    def _call(self, method, request_factory, timeout: float = 30.0):
        """Call with the current token; log in again once if it expired."""
        try:
            return method(request_factory(self._token), timeout=timeout)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAUTHENTICATED:
                raise
        self.login()
        return method(request_factory(self._token), timeout=timeout)

    def upload(self, task_id: str, task_zip: bytes, memory_gb: int, cpu_score: int, gpu_score: int = 0) -> None:
        reply = self._call(self._master.UploadTask, lambda token: pb.UploadTaskRequest(
            task_id=task_id, task_zip=task_zip, memory_gb=memory_gb, cpu_score=cpu_score,
            gpu_score=gpu_score, token=token), timeout=120.0)
        if not reply.success:
            raise PoolError(f"upload of {task_id} refused: {reply.message}")

    def tasks(self) -> dict[str, TaskState]:
        reply = self._call(self._master.GetAllUserTasks, lambda token: pb.GetAllUserTasksRequest(token=token))
        return {
            t.task_id: TaskState(t.task_id, t.status, t.message, t.cpu_usage, t.memory_usage)
            for t in reply.tasks
        }

    def log(self, task_id: str) -> str:
        reply = self._call(self._master.GetTasklog, lambda token: pb.TasklogRequest(task_id=task_id, token=token))
        return reply.log if reply.success else ""

    def result(self, task_id: str) -> bytes | None:
        reply = self._call(self._master.GetTaskResult, lambda token: pb.GetTaskResultRequest(
            task_id=task_id, token=token), timeout=120.0)
        return reply.result_zip if reply.success else None

    def stop(self, task_id: str) -> str:
        reply = self._call(self._master.StopTask, lambda token: pb.StopTaskRequest(task_id=task_id, token=token),
                           timeout=60.0)
        return reply.message
