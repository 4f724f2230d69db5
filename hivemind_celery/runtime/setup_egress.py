"""The set-up proxy container of one task (HIVEMIND_SETUP_EGRESS=index).

The set-up container runs with network `none`; this container, on Docker's
default bridge, is its only way out and lets it reach only the package index
(runtime/setup_proxy.py is the program, docker_config.proxy_kwargs the
hardening). It carries the task's labels (role `proxy`), so kill and reap
remove it with the task's other containers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import docker
from docker.errors import APIError, NotFound

from hivemind_celery.core.settings import Settings
from hivemind_celery.runtime import reaper
from hivemind_celery.runtime.base import Job
from hivemind_celery.runtime.docker_config import proxy_kwargs

log = logging.getLogger(__name__)

LOG_LINES = 200  # the proxy prints one line per refusal; a few are enough to name them


@dataclass
class ProxyReport:
    denied: list[str] = field(default_factory=list)  # host:port the set-up step was refused
    problem: str = ""  # why the proxy itself was not serving, if it was not


def start_proxy(
    client: docker.DockerClient,
    job: Job,
    settings: Settings,  # type: ignore[no-untyped-def]
    deps_volume: str,
):
    """Create and start the proxy; the caller removes it (it is returned at once)."""
    container = client.containers.create(**proxy_kwargs(job, settings, deps_volume))
    container.start()
    return container


def finish_proxy(container, task_id: str) -> ProxyReport:  # type: ignore[no-untyped-def]
    """What the proxy refused, then remove it: the main step never needs it."""
    report = ProxyReport()
    try:
        container.reload()
        running = container.attrs.get("State", {}).get("Running", False)
        text = container.logs(stdout=True, stderr=True, tail=LOG_LINES).decode("utf-8", "replace")
    except (NotFound, APIError) as exc:
        report.problem = f"the set-up proxy could not be read: {exc}"
        log.warning(report.problem, extra={"task_id": task_id})
        return report
    report.denied = sorted({line.split(" ", 1)[1].strip() for line in text.splitlines() if line.startswith("DENIED ")})
    if not running:
        report.problem = f"the set-up proxy had stopped: {text.strip()[-500:]}"
        log.warning(report.problem, extra={"task_id": task_id})
    if report.denied:
        log.warning("set-up step was refused %s", ", ".join(report.denied), extra={"task_id": task_id})
    reaper.remove_container(container, task_id)
    return report
