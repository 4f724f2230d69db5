"""The worker's main process: one thin module per bootstep or signal hook, and,
listed once here, everything it adds to Celery: the bootsteps it starts, the signal
hooks it connects, the inspect commands it answers. None of them adds itself on
import; celery_app.py adds them to the worker app."""

from __future__ import annotations

from celery import signals

from hivemind_celery.worker import draining, host_series, logs, metrics, prefs, reaper, registry, rescue, revoke

__all__ = ["WORKER_COMMANDS", "WORKER_HOOKS", "WORKER_STEPS"]

WORKER_STEPS = (
    reaper.PeriodicReaper,
    registry.RegistryStep,
    rescue.RescueStep,
    metrics.MetricsStep,
    host_series.HostSeriesStep,
    prefs.PrefsStep,
)
WORKER_HOOKS = (
    (signals.setup_logging, logs.setup_logging),
    (signals.worker_init, reaper.reap_at_start),
    (signals.worker_init, draining.clear_draining),
    (signals.worker_shutting_down, draining.mark_draining),
    (signals.worker_shutdown, reaper.reap_at_stop),
    (signals.task_revoked, revoke.cleanup_revoked),
    (signals.task_received, rescue.record_delivery),
    (signals.task_received, prefs.wake_on_task),
    (signals.task_postrun, rescue.forget_delivery),
)
WORKER_COMMANDS = (registry.capabilities,)
