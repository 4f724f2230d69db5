"""The Celery client: what a process that sends the task, reads its result or
talks to workers needs (the bridge, `hivemind run`, the demo). The broker and
backend configuration, the queues, the task's name and the one way to send it.

Building a client has no side effect: no task body, worker step or signal hook
is imported or connected. The worker app (celery_app.py) is this client plus
the task and the worker's parts.

The settings: late acks with requeue when a worker dies, one message
prefetched at a time, a hard time limit below the Redis visibility timeout
(the same on every worker, since it comes from the same settings), and
explicit cpu/gpu queues with no auto-created ones (docs/RELIABILITY.md).
"""

from __future__ import annotations

from celery import Celery
from celery.result import AsyncResult
from kombu import Exchange, Queue

from hivemind_celery.core import TASK_NAME, Settings, TaskSpec, get_settings

__all__ = ["QUEUES", "TASK_NAME", "celery_config", "create_client", "send_run_task"]

QUEUES = ("cpu", "gpu")
BROKER_WAIT_SECONDS = 5


def celery_config(settings: Settings) -> dict:
    # kombu sweeps unacked messages back to the queue once they are older than the
    # visibility timeout (a worker that died holding them); by default it looks only
    # every ~100 s, so a short timeout would not help. Look every tenth of it (1-10 s).
    restore_every = max(1, min(10, int(settings.visibility_timeout / 10)))
    transport = {
        "visibility_timeout": int(settings.visibility_timeout),
        "unacked_restore_interval": restore_every,
        "unacked_restore_throttle": 1,
        # kombu's Redis transport blocks in BRPOP this long (its brpop_timeout) before it
        # asks again; a message ends the wait at once. kombu's 1 s made an idle worker's
        # loop wake every second for nothing (issue 26).
        "polling_interval": BROKER_WAIT_SECONDS,
    }
    return {
        "broker_url": settings.broker,
        "result_backend": settings.backend,
        "broker_transport_options": transport,
        "result_backend_transport_options": {"visibility_timeout": int(settings.visibility_timeout)},
        "broker_connection_retry_on_startup": True,
        "task_queues": [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES],
        "task_default_queue": "cpu",
        "task_default_exchange": "cpu",
        "task_default_routing_key": "cpu",
        "task_create_missing_queues": False,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        # Not True: cancelling on a broker connection loss terminated every running
        # task when Redis restarted (the Redis-restart drill, docs/RELIABILITY.md).
        # Left running, a task finishes and stores its outcome; its message, which
        # cannot be acked on the new connection, comes back after the visibility
        # timeout and the task guard returns that outcome without running it again.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_time_limit": int(settings.hard_time_limit),
        # Celery's default. Storing STARTED in the backend costs two Redis round trips
        # before every task runs; Flower shows STARTED from the task-started event, and the
        # backend says RUNNING with live usage from the first sample (task/observers.py).
        "task_track_started": False,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "result_extended": True,
        "result_expires": int(settings.payload_ttl),
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "worker_hijack_root_logger": False,
        "timezone": "UTC",
        "enable_utc": True,
    }


def create_client(settings: Settings | None = None) -> Celery:
    """A configured Celery app that knows no task: it sends `TASK_NAME` by name."""
    celery = Celery("hivemind_celery")
    celery.conf.update(celery_config(settings or get_settings()))
    return celery


def send_run_task(celery: Celery, spec: TaskSpec) -> AsyncResult:
    """Queue one run of `spec` on its queue, with the spec's task id as the Celery id."""
    return celery.send_task(TASK_NAME, args=[spec.model_dump(mode="json")], task_id=spec.task_id, queue=spec.queue.value)
