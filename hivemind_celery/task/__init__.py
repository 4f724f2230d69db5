"""One task run: the Celery task (celery_task), the guarded run (run), its job, outcomes
and stored result, cancellation, output streams, and the usage meter with its observers."""
