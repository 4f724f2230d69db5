"""One task run: the Celery task (celery_task), the guarded run (run), its job, outcomes
and stored result, cancellation, output streams, the task's hold on its GPUs (gpus), and
the usage meter with its observers."""
