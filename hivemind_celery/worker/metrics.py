"""Serving /metrics from the worker's main process while it runs (the collector
is observability/metrics.py; celery_app adds this step)."""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

from hivemind_celery.core.settings import get_settings
from hivemind_celery.observability.metrics import serve

log = logging.getLogger(__name__)


class MetricsStep(bootsteps.StartStopStep):
    """Serves /metrics from the worker's main process while it runs."""

    label = "HiveMind metrics"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.server: Any = None

    def start(self, parent: Any) -> None:
        settings = get_settings()
        if not settings.metrics_port:
            return
        try:
            self.server, _ = serve(settings)
        except OSError as exc:
            # A taken port must not stop the worker from working.
            log.error("metrics: cannot listen on port %d: %s", settings.metrics_port, exc)
            return
        log.info("metrics served on port %d", settings.metrics_port)

    def stop(self, parent: Any) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)
