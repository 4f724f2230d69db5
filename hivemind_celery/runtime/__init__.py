"""Runtimes run one job each: `docker` (the default, hardened containers) or
`process` (no isolation, for machines without Docker; off unless chosen).

What other packages may use is listed here: what a runtime is given and gives back
(base) and `get_runtime`; the runtimes themselves and the Docker stats source only
when first asked for (they load the Docker SDK)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hivemind_celery.core.lazy import lazy_names
from hivemind_celery.core.settings import Settings
from hivemind_celery.runtime.base import (
    Job,
    JobResult,
    Runtime,
    RuntimeRefused,
    Started,
)

if TYPE_CHECKING:
    from hivemind_celery.runtime.docker_driver import DockerRuntime
    from hivemind_celery.runtime.docker_stats import DockerStatsSource, source_for
    from hivemind_celery.runtime.process import ProcessRuntime

__all__ = [
    "DockerRuntime",
    "DockerStatsSource",
    "Job",
    "JobResult",
    "ProcessRuntime",
    "Runtime",
    "RuntimeRefused",
    "Started",
    "get_runtime",
    "source_for",
]

__getattr__ = lazy_names(
    __name__,
    {
        "DockerRuntime": "hivemind_celery.runtime.docker_driver",
        "DockerStatsSource": "hivemind_celery.runtime.docker_stats",
        "source_for": "hivemind_celery.runtime.docker_stats",
        "ProcessRuntime": "hivemind_celery.runtime.process",
    },
)


def get_runtime(settings: Settings) -> Runtime:
    if settings.runtime == "process":
        from hivemind_celery.runtime.process import ProcessRuntime

        return ProcessRuntime(settings)
    from hivemind_celery.runtime.docker_driver import DockerRuntime

    return DockerRuntime(settings)
