"""What the site says about itself: structured logs, custom Celery signals,
health checks and the Prometheus collector."""

from hivemind_celery.observability.logs import attach_problem_log, recent_problems
from hivemind_celery.observability.series import SeriesStore

__all__ = ["SeriesStore", "attach_problem_log", "recent_problems"]
