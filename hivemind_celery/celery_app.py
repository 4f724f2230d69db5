"""The Celery application: queues, reliability settings and task modules.

The settings follow docs/ARCHITECTURE decisions: late acks with requeue when a
worker dies, one message prefetched at a time, a hard time limit below the
Redis visibility timeout (the same on every worker, since it comes from the
same settings), and explicit cpu/gpu queues with no auto-created ones.
"""

from __future__ import annotations

from celery import Celery, signals
from celery.worker.control import inspect_command
from kombu import Exchange, Queue

from hivemind_celery.core.model import TASK_NAME
from hivemind_celery.core.settings import Settings, get_settings
from hivemind_celery.task.celery_task import RunTask, run_task
from hivemind_celery.worker import draining, host_series, logs, metrics, prefs, reaper, registry, rescue, revoke

# Everything the worker's main process adds to Celery, in one place: the
# bootsteps it starts, the signal hooks it connects, the inspect commands it
# answers. Each lives in its own thin module under worker/.
WORKER_STEPS = (reaper.PeriodicReaper, registry.RegistryStep, rescue.RescueStep, metrics.MetricsStep,
                host_series.HostSeriesStep, prefs.PrefsStep)
WORKER_HOOKS = (
    (signals.setup_logging, logs.setup_logging),
    (signals.worker_init, reaper.reap_at_start),
    (signals.worker_init, draining.clear_draining),
    (signals.worker_shutting_down, draining.mark_draining),
    (signals.worker_shutdown, reaper.reap_at_stop),
    (signals.task_revoked, revoke.cleanup_revoked),
    (signals.task_received, rescue.record_delivery),
    (signals.task_postrun, rescue.forget_delivery),
)
WORKER_COMMANDS = (registry.capabilities,)


def celery_config(settings: Settings) -> dict:
    # kombu sweeps unacked messages back to the queue once they are older than the
    # visibility timeout (a worker that died holding them); by default it looks only
    # every ~100 s, so a short timeout would not help. Look every tenth of it (1-10 s).
    restore_every = max(1, min(10, int(settings.visibility_timeout / 10)))
    transport = {"visibility_timeout": int(settings.visibility_timeout),
                 "unacked_restore_interval": restore_every, "unacked_restore_throttle": 1}
    return {
        "broker_url": settings.broker,
        "result_backend": settings.backend,
        "broker_transport_options": transport,
        "result_backend_transport_options": {"visibility_timeout": int(settings.visibility_timeout)},
        "broker_connection_retry_on_startup": True,
        "task_queues": [
            Queue("cpu", Exchange("cpu", type="direct"), routing_key="cpu"),
            Queue("gpu", Exchange("gpu", type="direct"), routing_key="gpu"),
        ],
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
        "task_track_started": True,
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


def create_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    celery = Celery("hivemind_celery")
    celery.conf.update(celery_config(settings))
    celery.task(name=TASK_NAME, bind=True, base=RunTask)(run_task)
    for step in WORKER_STEPS:
        celery.steps["worker"].add(step)
    return celery


def connect_worker_hooks() -> None:
    """Signals and inspect commands are process-wide in Celery: connect them once."""
    for signal, hook in WORKER_HOOKS:
        signal.connect(hook, weak=False)
    for command in WORKER_COMMANDS:
        inspect_command()(command)


connect_worker_hooks()
app = create_app()
