"""The worker app: the Celery client (client.py: settings, queues, the task's
name) plus what only a worker needs: the task body, and every worker step,
hook and inspect command (listed once in worker/__init__.py).

`celery -A hivemind_celery worker` loads this module (hivemind_celery.app);
importing it connects the worker's signal hooks, process-wide. A process that
only sends tasks or reads results uses `hivemind_celery.client` instead.
"""

from __future__ import annotations

from celery import Celery
from celery.worker.control import inspect_command

from hivemind_celery.client import celery_config, create_client
from hivemind_celery.core import TASK_NAME, Settings
from hivemind_celery.task import RunTask, run_task
from hivemind_celery.worker import WORKER_COMMANDS, WORKER_HOOKS, WORKER_STEPS

__all__ = ["app", "celery_config", "connect_worker_hooks", "create_app"]


def create_app(settings: Settings | None = None) -> Celery:
    celery = create_client(settings)
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
