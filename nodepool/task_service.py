"""MasterNodeService (task owners) and the pool's half of WorkerNodeService (workers reporting).

Every call is checked against its token. Owners see only their own tasks;
workers may report only on tasks given to their node. GetAllUserTasks and
GetTasklog have no message field in their replies, so a bad token there ends
the call with UNAUTHENTICATED instead of `success=false`.
"""

from __future__ import annotations

import logging

import grpc

from nodepool import nodes, results, tasks
from nodepool.auth import AuthError
from nodepool.context import Pool, authenticate, bearer_token
from nodepool.errors import Refused
from nodepool.tasks import FINAL_STATES, State
from proto import nodepool_pb2 as pb
from proto import nodepool_pb2_grpc as pb_grpc

log = logging.getLogger("hivemind.nodepool.tasks")

NODE_USAGE_TASK_ID = "0"  # TaskUsage for the node as a whole


class MasterNodeService(pb_grpc.MasterNodeServiceServicer):
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def UploadTask(self, request: pb.UploadTaskRequest, context: grpc.ServicerContext) -> pb.UploadTaskResponse:
        wanted = tasks.Request(
            memory_gb=request.memory_gb,
            cpu_score=request.cpu_score,
            gpu_score=request.gpu_score,
            gpu_memory_gb=request.gpu_memory_gb,
            location=request.location,
            gpu_name=request.gpu_name,
        )
        try:
            owner = authenticate(self._pool, request.token)
            tasks.upload(self._pool.store, owner, request.task_id, request.task_zip, wanted, self._pool.settings.max_task_bytes)
        except (AuthError, Refused) as exc:
            log.info("upload refused: %s", exc, extra={"task_id": request.task_id[:128]})
            return pb.UploadTaskResponse(success=False, message=str(exc))
        log.info("task uploaded (%d bytes) by %s", len(request.task_zip), owner.username, extra={"task_id": request.task_id})
        self._pool.dispatcher.wake()
        return pb.UploadTaskResponse(success=True, message=f"task {request.task_id} queued")

    def GetTaskResult(self, request: pb.GetTaskResultRequest, context: grpc.ServicerContext) -> pb.GetTaskResultResponse:
        try:
            owner = authenticate(self._pool, request.token)
            task = tasks.owned(self._pool.store, owner, request.task_id)
        except (AuthError, Refused) as exc:
            return pb.GetTaskResultResponse(success=False, message=str(exc))
        data = tasks.result_zip(self._pool.store, task.task_id)
        if data is None:
            return pb.GetTaskResultResponse(success=False, message=f"no result yet: task is {task.status}")
        return pb.GetTaskResultResponse(success=True, message=task.status, result_zip=data)

    def GetAllUserTasks(self, request: pb.GetAllUserTasksRequest, context: grpc.ServicerContext) -> pb.GetAllTasksResponse:
        try:
            owner = authenticate(self._pool, request.token)
        except AuthError as exc:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        infos = [
            pb.TaskInfo(
                task_id=t.task_id,
                status=t.status,
                message=t.message,
                cpu_usage=t.cpu_usage,
                memory_usage=t.memory_usage,
                gpu_usage=t.gpu_usage,
                gpu_memory_usage=t.gpu_memory_usage,
                worker_ip=t.worker_ip,
            )
            for t in tasks.of_owner(self._pool.store, owner)
        ]
        return pb.GetAllTasksResponse(tasks=infos)

    def GetTasklog(self, request: pb.TasklogRequest, context: grpc.ServicerContext) -> pb.TasklogResponse:
        try:
            owner = authenticate(self._pool, request.token)
        except AuthError as exc:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        try:
            task = tasks.owned(self._pool.store, owner, request.task_id)
        except Refused as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return pb.TasklogResponse(success=True, log=tasks.output_of(self._pool.store, task.task_id))

    def StopTask(self, request: pb.StopTaskRequest, context: grpc.ServicerContext) -> pb.StopTaskResponse:
        try:
            owner = authenticate(self._pool, request.token)
            task = tasks.owned(self._pool.store, owner, request.task_id)
        except (AuthError, Refused) as exc:
            return pb.StopTaskResponse(success=False, message=str(exc))
        extra = {"task_id": task.task_id, "node_id": task.node_id or ""}
        if tasks.stop_pending(self._pool.store, task.task_id):
            log.info("pending task stopped", extra=extra)
            return pb.StopTaskResponse(success=True, message="stopped before it started")
        task = tasks.get(self._pool.store, task.task_id) or task
        if task.status in FINAL_STATES:
            return pb.StopTaskResponse(success=False, message=f"task already ended: {task.status}")
        node = nodes.get_node(self._pool.store, task.node_id or "")
        if task.status != State.RUNNING or node is None:
            return pb.StopTaskResponse(success=False, message=f"task is {task.status}; nothing to stop")
        accepted, reason = self._pool.dispatcher.stop_on_node(node, task.task_id)
        if not accepted:
            log.warning("node did not stop task: %s", reason[:200], extra=extra)
            return pb.StopTaskResponse(success=False, message=f"node did not stop the task: {reason}")
        tasks.mark_stopped(self._pool.store, task.task_id, f"stopped on request; node: {reason}")
        log.info("task stopped", extra=extra)
        return pb.StopTaskResponse(success=True, message=f"stopping: {reason}" if reason else "stopping")


class WorkerNodeService(pb_grpc.WorkerNodeServiceServicer):
    """The RPCs workers call on the pool. ExecuteTask and StopTaskExecution are served
    by workers, not here; the generated base class answers them UNIMPLEMENTED."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def _output(self, task_id: str, output: str, token: str) -> tuple[bool, str]:
        try:
            node = authenticate(self._pool, token)
            task = tasks.assigned(self._pool.store, node, task_id)
        except (AuthError, Refused) as exc:
            return False, str(exc)
        tasks.append_output(self._pool.store, task.task_id, output, self._pool.settings.output_keep_bytes)
        return True, "ok"

    def TaskOutputUpload(self, request: pb.TaskOutputUploadRequest, context: grpc.ServicerContext) -> pb.TaskOutputUploadResponse:
        success, message = self._output(request.task_id, request.output, request.token)
        return pb.TaskOutputUploadResponse(success=success, message=message)

    def TaskOutput(self, request: pb.TaskOutputRequest, context: grpc.ServicerContext) -> pb.TaskOutputResponse:
        success, message = self._output(request.task_id, request.output, request.token)
        return pb.TaskOutputResponse(success=success, message=message)

    def TaskUsage(self, request: pb.TaskUsageRequest, context: grpc.ServicerContext) -> pb.TaskUsageResponse:
        figures = (request.cpu_usage, request.memory_usage, request.gpu_usage, request.gpu_memory_usage)
        try:
            if request.task_id == NODE_USAGE_TASK_ID:
                # The protocol puts the node id in `token` here; the token itself
                # comes as metadata (an older bridge sent it in the field).
                bearer = bearer_token(context)
                node = authenticate(self._pool, bearer or request.token)
                if request.token not in (node.username, bearer):
                    raise Refused(f"node-level usage names node {request.token[:64]!r}, not the logged-in {node.username!r}")
                nodes.record_node_usage(self._pool.store, node.username, *figures)
            else:
                node = authenticate(self._pool, request.token)
                task = tasks.assigned(self._pool.store, node, request.task_id)
                tasks.record_usage(self._pool.store, task.task_id, *figures)
        except (AuthError, Refused) as exc:
            return pb.TaskUsageResponse(success=False, message=str(exc))
        return pb.TaskUsageResponse(success=True, message="ok")

    def TaskResultUpload(self, request: pb.TaskResultUploadRequest, context: grpc.ServicerContext) -> pb.TaskResultUploadResponse:
        try:
            node = authenticate(self._pool, request.token)
            stored, payment = results.accept_result(
                self._pool.store,
                node,
                request.task_id,
                request.result_zip,
                self._pool.settings.max_result_bytes,
                self._pool.policy,
            )
        except (AuthError, Refused) as exc:
            log.info("result refused: %s", exc, extra={"task_id": request.task_id[:128]})
            return pb.TaskResultUploadResponse(success=False, message=str(exc))
        if not stored:
            log.info("duplicate result ignored", extra={"task_id": request.task_id[:128]})
            return pb.TaskResultUploadResponse(success=True, message="duplicate result ignored; the first one is kept")
        self._pool.dispatcher.wake()  # the task's room on its node is free again
        paid = payment.amount_paid if payment else 0
        return pb.TaskResultUploadResponse(success=True, message=f"result stored; {paid} CPT paid")
