"""Is this worker machine fit to take tasks? Redis, Docker, disk and memory.

Each check gives a named result with a plain reason; the report is healthy
only when all pass. `hivemind health` prints it (exit code 1 when unhealthy),
and it is cheap enough for a container HEALTHCHECK or a systemd watchdog.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil
import redis

from hivemind_celery.core.redis_client import redis_from_url
from hivemind_celery.core.settings import Settings
from hivemind_celery.core.units import MiB


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class HealthReport:
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return all(check.ok for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "checks": [asdict(check) for check in self.checks]}


def _redacted(url: str) -> str:
    # Never show a password from the URL.
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return f"{scheme}{sep}{rest}"


def check_redis(url: str, timeout: float = 2.0) -> CheckResult:
    try:
        redis_from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout).ping()
    except (redis.RedisError, ValueError) as exc:
        return CheckResult("redis", False, f"{_redacted(url)}: {exc}")
    return CheckResult("redis", True, f"{_redacted(url)} answers")


def check_docker(timeout: float = 5.0) -> CheckResult:
    try:
        import docker

        client = docker.from_env(timeout=int(max(1, timeout)))
        try:
            client.ping()
            version = client.version().get("Version", "?")
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - any failure means no usable dockerd
        return CheckResult("docker", False, f"dockerd not reachable: {exc}")
    return CheckResult("docker", True, f"dockerd {version} answers")


def check_disk(path: str, min_free_mb: int) -> CheckResult:
    try:
        snap_free = psutil.disk_usage(path).free
    except OSError as exc:
        return CheckResult("disk", False, f"{path}: {exc}")
    free_mb = snap_free // MiB
    ok = free_mb >= min_free_mb
    return CheckResult("disk", ok, f"{path}: {free_mb} MiB free ({'>=' if ok else '<'} {min_free_mb} MiB)")


def check_memory(min_available_mb: int) -> CheckResult:
    available_mb = psutil.virtual_memory().available // MiB
    ok = available_mb >= min_available_mb
    return CheckResult("memory", ok, f"{available_mb} MiB available ({'>=' if ok else '<'} {min_available_mb} MiB)")


def check_health(settings: Settings, docker: bool | None = None) -> HealthReport:
    """Run every check. `docker=None`: check Docker only with the docker runtime."""
    checks: list[Callable[[], CheckResult]] = [
        lambda: check_redis(settings.broker),
        lambda: check_disk(settings.monitor_disk_path, settings.health_min_disk_free_mb),
        lambda: check_memory(settings.health_min_memory_mb),
    ]
    if settings.payload_redis != settings.broker:
        checks.insert(1, lambda: check_redis(settings.payload_redis))
    if docker if docker is not None else settings.runtime == "docker":
        checks.insert(1, lambda: check_docker(settings.docker_timeout))
    return HealthReport([check() for check in checks])
