"""The worker's logging: structured, from HIVEMIND_LOG_* (celery_app connects
it to setup_logging, so Celery does not install its own handlers)."""

from __future__ import annotations

from hivemind_celery.core.settings import get_settings
from hivemind_celery.observability.logs import attach_problem_log, configure_logging


def setup_logging(loglevel: str | int | None = None, **_: object) -> None:
    settings = get_settings()
    # HIVEMIND_LOG_LEVEL, when set, wins over celery's -l option.
    configure_logging(settings, None if "log_level" in settings.model_fields_set else loglevel)
    attach_problem_log(settings, "worker", settings.worker_id)
