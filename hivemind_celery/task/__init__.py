"""One task run: the Celery task (celery_task), the guarded run (run), its job, outcomes
and stored result, cancellation, output streams, the task's hold on its GPUs (gpus), and
the usage meter with its observers."""

from hivemind_celery.task.cancellation import request_stop
from hivemind_celery.task.idempotency import TaskGuard
from hivemind_celery.task.streams import output_tail

__all__ = ["TaskGuard", "output_tail", "request_stop"]
