"""Calls from the pool to a worker's WorkerNodeService: ExecuteTask and StopTaskExecution."""

from __future__ import annotations

import grpc

from nodepool.settings import NodePoolSettings
from proto import nodepool_pb2 as pb
from proto import nodepool_pb2_grpc as pb_grpc

SECRET_METADATA_KEY = "x-hivemind-secret"


class WorkerClient:
    def __init__(self, settings: NodePoolSettings) -> None:
        self._settings = settings
        secret = settings.worker_secret.get_secret_value() if settings.worker_secret else ""
        self._metadata = ((SECRET_METADATA_KEY, secret),) if secret else ()
        self._options = [
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.max_receive_message_length", settings.max_message_bytes),
        ]
        self._credentials = (
            grpc.ssl_channel_credentials(root_certificates=settings.worker_ca_file.read_bytes())
            if settings.worker_ca_file
            else None
        )

    def _channel(self, address: str) -> grpc.Channel:
        if self._credentials is None:
            return grpc.insecure_channel(address, options=self._options)
        return grpc.secure_channel(address, self._credentials, options=self._options)

    def execute_deadline(self, zip_size: int) -> float:
        s = self._settings
        return min(s.execute_deadline_max_s, s.execute_deadline_base_s + zip_size / s.execute_bytes_per_s)

    def execute(self, address: str, request: pb.ExecuteTaskRequest) -> pb.ExecuteTaskResponse:
        """Raises grpc.RpcError when the worker cannot be reached or fails the call."""
        with self._channel(address) as channel:
            stub = pb_grpc.WorkerNodeServiceStub(channel)
            return stub.ExecuteTask(request, timeout=self.execute_deadline(len(request.task_zip)), metadata=self._metadata)

    def stop(self, address: str, task_id: str) -> pb.StopTaskExecutionResponse:
        with self._channel(address) as channel:
            stub = pb_grpc.WorkerNodeServiceStub(channel)
            return stub.StopTaskExecution(
                pb.StopTaskExecutionRequest(task_id=task_id),
                timeout=self._settings.stop_deadline_s,
                metadata=self._metadata,
            )
