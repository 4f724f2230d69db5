"""A logged-in connection to a Node Pool for the user commands.

It logs in with HIVEMIND_USERNAME / HIVEMIND_PASSWORD at HIVEMIND_NODEPOOL_ADDRESS
and keeps the token in memory only (nothing secret is written to disk); a
command that runs long (--wait, --follow) logs in again before the token's
lifetime is up.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
import typer

from hivemind_celery.core.errors import HivemindError
from proto import nodepool_pb2 as pb
from proto import nodepool_pb2_grpc as pb_grpc

MAX_MESSAGE_BYTES = 128 * 1024 * 1024  # above the pool's 100 MB zip limit
RELOGIN_AFTER_S = 20 * 60  # well inside the pool's default 60-minute token lifetime


class PoolError(HivemindError):
    """The pool refused or could not be reached; the message says which and why."""


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
            options=[("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                     ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)],
        )
        self.users = pb_grpc.UserServiceStub(self._channel)
        self.master = pb_grpc.MasterNodeServiceStub(self._channel)

    @classmethod
    def from_settings(cls) -> PoolClient:
        from hivemind_celery.core.settings import Settings

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
            code = exc.code()  # type: ignore[attr-defined]
            if code == grpc.StatusCode.UNAVAILABLE:
                raise PoolError(f"cannot reach the Node Pool at {self.address}: {exc.details()}") from None  # type: ignore[attr-defined]
            raise PoolError(f"{code.name}: {exc.details()}") from None  # type: ignore[attr-defined]

    @property
    def token(self) -> str:
        if not self._token or time.monotonic() - self._logged_in_at > RELOGIN_AFTER_S:
            reply = self.call(self.users.Login, pb.LoginRequest(username=self._username, password=self._password))
            if not reply.success:
                raise PoolError(f"login as {self._username!r} failed: {reply.message}")
            self._token, self._logged_in_at = reply.token, time.monotonic()
        return self._token

    def tasks(self) -> list[pb.TaskInfo]:
        return list(self.call(self.master.GetAllUserTasks, pb.GetAllUserTasksRequest(token=self.token)).tasks)

    def task(self, task_id: str) -> pb.TaskInfo:
        found = next((t for t in self.tasks() if t.task_id == task_id), None)
        if found is None:
            raise PoolError(f"no task {task_id!r} of yours on the Node Pool")
        return found

    def log(self, task_id: str) -> str:
        return self.call(self.master.GetTasklog, pb.TasklogRequest(task_id=task_id, token=self.token)).log

    def result(self, task_id: str) -> bytes | None:
        reply = self.call(self.master.GetTaskResult, pb.GetTaskResultRequest(task_id=task_id, token=self.token),
                          timeout_s=300)
        return reply.result_zip if reply.success else None


def fail(message: str) -> typer.Exit:
    """Print an error to stderr and return the exit to raise."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)
