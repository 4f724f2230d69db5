"""What the site says about itself: structured logs, custom Celery signals,
health checks and the Prometheus collector.

What other packages may use is listed here. Logs and the time series are imported
at once; the health checks (psutil), the Prometheus collector and the Celery signals
(a module: `signals.task_rewarded`) only when first asked for, so a bridge that logs
does not load psutil and a console does not load Celery."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hivemind_celery.core.lazy import lazy_names
from hivemind_celery.observability.logs import (
    PROBLEMS_MAX,
    JsonFormatter,
    ProblemLogHandler,
    TextFormatter,
    attach_problem_log,
    configure_logging,
    recent_problems,
    redact,
)
from hivemind_celery.observability.series import HOST_MAX_AGE, SeriesStore

if TYPE_CHECKING:
    from hivemind_celery.observability import signals
    from hivemind_celery.observability.health import (
        CheckResult,
        HealthReport,
        check_disk,
        check_health,
        check_memory,
        check_redis,
    )
    from hivemind_celery.observability.metrics import WorkerCollector, serve

__all__ = [
    "HOST_MAX_AGE",
    "PROBLEMS_MAX",
    "CheckResult",
    "HealthReport",
    "JsonFormatter",
    "ProblemLogHandler",
    "SeriesStore",
    "TextFormatter",
    "WorkerCollector",
    "attach_problem_log",
    "check_disk",
    "check_health",
    "check_memory",
    "check_redis",
    "configure_logging",
    "recent_problems",
    "redact",
    "serve",
    "signals",
]

__getattr__ = lazy_names(
    __name__,
    {
        "CheckResult": "hivemind_celery.observability.health",
        "HealthReport": "hivemind_celery.observability.health",
        "check_disk": "hivemind_celery.observability.health",
        "check_health": "hivemind_celery.observability.health",
        "check_memory": "hivemind_celery.observability.health",
        "check_redis": "hivemind_celery.observability.health",
        "WorkerCollector": "hivemind_celery.observability.metrics",
        "serve": "hivemind_celery.observability.metrics",
        "signals": "hivemind_celery.observability.signals",
    },
)
