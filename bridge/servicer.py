"""WorkerNodeService as the bridge serves it: ExecuteTask and
StopTaskExecution, called by the Node Pool (after CallerGuard let it in).

ExecuteTask: check the request, refuse a bad zip at the door, reserve the
capacity in the registry, store the zip by reference, record the task as
owed, and send `hivemind.run_task` to the cpu or gpu queue with the Node Pool
task id as the Celery id. A repeated ExecuteTask for an owed task answers
success without sending it again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
import redis

from bridge import capacity, intake
from bridge.intake import IntakeRefused
from bridge.outbox import OwedTask
from bridge.parts import BridgeParts
from hivemind_celery.client import send_run_task
from hivemind_celery.core import keys
from hivemind_celery.payloads import PayloadError
from hivemind_celery.site import PrefsStore, paused_reasons
from hivemind_celery.task import request_stop
from proto import nodepool_pb2 as pb
from proto import nodepool_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

INTAKE_LOCK_TTL = 120  # longer than any one ExecuteTask takes
INTAKE_LOCK_WAIT = 60.0


class WorkerNodeServicer(pb_grpc.WorkerNodeServiceServicer):
    def __init__(self, parts: BridgeParts) -> None:
        self._settings = parts.settings
        self._node_id = parts.node_id
        self._redis = parts.redis
        self._celery = parts.celery
        self._registry = parts.registry
        self._payloads = parts.payloads
        self._outbox = parts.outbox
        # Reservations outlive the longest task; the relay releases them sooner.
        self._allocation_ttl = int(parts.settings.hard_time_limit + 3600)
        # Called once a new task's acceptance has been answered (the heartbeat's
        # wake): the deployed pool marks a node BUSY after every dispatch and
        # dispatches to it again only after its next Idle report.
        self.on_accepted: Callable[[], None] | None = None

    # -- ExecuteTask --------------------------------------------------------
    def ExecuteTask(self, request: pb.ExecuteTaskRequest, context: grpc.ServicerContext) -> pb.ExecuteTaskResponse:
        extra = {"task_id": request.task_id[:128], "node_id": self._node_id}
        try:
            message = self.take(request, after_answer=context.add_callback)
        except IntakeRefused as exc:
            log.warning("refused task: %s", exc, extra=extra)
            return pb.ExecuteTaskResponse(success=False, message=str(exc))
        except (redis.RedisError, PayloadError, OSError) as exc:
            log.exception("could not take the task", extra=extra)
            return pb.ExecuteTaskResponse(success=False, message=f"worker site unavailable: {exc}")
        return pb.ExecuteTaskResponse(success=True, message=message)

    def take(self, request: pb.ExecuteTaskRequest, after_answer: Callable[[Callable[[], None]], object] | None = None) -> str:
        """Accept the task or raise IntakeRefused; returns the answer's message.

        Redis round trips on the way to the answer: the intake lock, the owed check,
        the registry allocation, one pipeline storing the zip and the outbox entry,
        then send_task. The lock is released once the answer is sent (`after_answer`,
        gRPC's termination callback) when one is given: by then the task is owed, so
        a retry that waited on the lock answers "already accepted".
        """
        intake.check_known_fields(request)  # a number sent as a string must not read as 0
        task_id = intake.check_task_id(request.task_id)
        res = intake.resources(request.cpu_usage, request.gpu_usage, request.memory_gb, request.gpu_memory_gb, self._settings)
        intake.check_zip(request.task_zip, self._settings)
        extra = {"task_id": task_id, "node_id": self._node_id}
        # One intake per task id at a time: the pool may retry while we still work.
        # The lock is this call's own object; not thread-local, since gRPC may run
        # the release callback on another thread.
        lock = self._redis.lock(
            keys.bridge_intake_lock(self._node_id, task_id),
            timeout=INTAKE_LOCK_TTL,
            blocking_timeout=INTAKE_LOCK_WAIT,
            thread_local=False,
        )
        if not lock.acquire():
            raise IntakeRefused(f"task {task_id} is being taken in by another call; try again")
        release_later = False
        try:
            if self._outbox.owes(task_id):
                return "already accepted"
            answer = self._accept(task_id, request.task_zip, res, extra)
            if after_answer is not None:
                after_answer(lambda: self._answered(lock))
                release_later = True
            elif self.on_accepted is not None:
                self.on_accepted()
            return answer
        finally:
            if not release_later:
                _release(lock)

    def _accept(self, task_id: str, zip_bytes: bytes, res: intake.Resources, extra: dict[str, str]) -> str:
        mode = PrefsStore(self._redis).mode()  # the owner's preferences pause the site
        if mode.paused:
            raise IntakeRefused(f"the site is paused: {mode.reason}")
        # Check and reserve in one step, so two intakes cannot both take the last room.
        if not self._registry.allocate(
            task_id, res.cpus, res.memory_mb, res.gpus, res.gpu_memory_mb, ttl=self._allocation_ttl, require_fit=True
        ):
            # Only on a refusal: one more read to say what is true (no GPU at all,
            # larger than the site, or full now).
            why = capacity.shortfall(self._registry.capacity(), res.cpus, res.memory_mb, res.gpus, res.gpu_memory_mb)
            paused = sorted(paused_reasons(self._redis).values())  # e.g. a worker's disk nearly full
            raise IntakeRefused(why + "".join(f"; {reason}" for reason in paused))
        try:
            # The zip and the outbox entry in one round trip (no transaction needed:
            # the intake lock is held and the payload is content-addressed).
            pipe = self._redis.pipeline(transaction=False)
            spec = intake.task_spec(task_id, self._payloads.put(zip_bytes, client=pipe), res)
            self._outbox.add(
                OwedTask(
                    task_id=task_id,
                    queue=spec.queue.value,
                    cpus=res.cpus,
                    memory_mb=res.memory_mb,
                    gpus=res.gpus,
                    gpu_memory_mb=res.gpu_memory_mb,
                    accepted_at=time.time(),
                ),
                client=pipe,
            )
            pipe.execute()
            send_run_task(self._celery, spec)
        except Exception:
            self._outbox.remove(task_id)
            self._registry.release(task_id)
            raise
        log.info(
            "accepted task for queue %s (%g CPUs, %d MiB, %d GPUs)",
            spec.queue.value,
            res.cpus,
            res.memory_mb,
            res.gpus,
            extra=extra,
        )
        return f"accepted on queue {spec.queue.value}"

    def _answered(self, lock: Any) -> None:
        _release(lock)
        if self.on_accepted is not None:
            self.on_accepted()

    # -- StopTaskExecution --------------------------------------------------
    def StopTaskExecution(
        self, request: pb.StopTaskExecutionRequest, context: grpc.ServicerContext
    ) -> pb.StopTaskExecutionResponse:
        task_id = request.task_id
        extra = {"task_id": task_id[:128], "node_id": self._node_id}
        try:
            intake.check_task_id(task_id)
            if not self._outbox.owes(task_id):
                raise IntakeRefused(f"task {task_id} is not running on this node")
            request_stop(self._redis, task_id)
        except IntakeRefused as exc:
            log.warning("stop refused: %s", exc, extra=extra)
            return pb.StopTaskExecutionResponse(success=False, message=str(exc))
        except redis.RedisError as exc:
            log.exception("could not request the stop", extra=extra)
            return pb.StopTaskExecutionResponse(success=False, message=f"worker site unavailable: {exc}")
        log.info("stop requested", extra=extra)
        return pb.StopTaskExecutionResponse(success=True, message="stop requested; the partial result follows")


def _release(lock: Any) -> None:
    try:
        lock.release()
    except (redis.exceptions.LockError, redis.RedisError):
        pass  # expired, or Redis gone: the lock's timeout frees it
