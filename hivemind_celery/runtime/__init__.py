"""Runtimes run one job each: `docker` (the default, hardened containers) or
`process` (no isolation, for machines without Docker; off unless chosen)."""

from __future__ import annotations

from hivemind_celery.core.settings import Settings
from hivemind_celery.runtime.base import (
    Job,
    JobResult,
    Runtime,
    RuntimeRefused,
    Started,
)

__all__ = ["Job", "JobResult", "Runtime", "RuntimeRefused", "Started", "get_runtime"]


def get_runtime(settings: Settings) -> Runtime:
    if settings.runtime == "process":
        from hivemind_celery.runtime.process import ProcessRuntime

        return ProcessRuntime(settings)
    from hivemind_celery.runtime.docker_driver import DockerRuntime

    return DockerRuntime(settings)
