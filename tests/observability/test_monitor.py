"""Host monitor, health checks, `hivemind health` and the Prometheus collector."""

from __future__ import annotations

import json
import os
import urllib.request

import psutil
import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest
from typer.testing import CliRunner

from hivemind_celery.core import keys
from hivemind_celery.core.settings import Settings
from hivemind_celery.observability.health import (
    check_disk,
    check_health,
    check_memory,
    check_redis,
)
from hivemind_celery.observability.metrics import WorkerCollector, serve
from hivemind_celery.task.observers import record_totals
from hivemind_celery.usage import host

REDIS_DB = 51  # this module's own database (see test_registry.py)


@pytest.fixture(scope="module")
def redis_url(redis_base: str) -> str:
    url = f"{redis_base}/{REDIS_DB}"
    redis.Redis.from_url(url).flushdb()
    return url


def test_snapshot_reads_the_host() -> None:
    snap = host.snapshot("/")
    assert snap.cpu_count == psutil.cpu_count()
    assert 0 < snap.memory_available_bytes <= snap.memory_total_bytes
    assert 0 < snap.disk_free_bytes <= snap.disk_total_bytes
    assert snap.load_average == pytest.approx(os.getloadavg(), abs=5)
    assert 0.0 <= snap.cpu_percent <= 100.0
    # No GPU on this machine: the list is empty, not an error.
    assert snap.gpus == []
    assert json.dumps(snap.as_dict())  # plain data, ready for JSON


def test_snapshot_of_a_missing_path_names_it() -> None:
    with pytest.raises(FileNotFoundError):
        host.snapshot("/no/such/path")


@pytest.mark.redis
def test_health_checks(redis_url: str, tmp_path) -> None:
    assert check_redis(redis_url).ok
    bad = check_redis("redis://user:s3cret@localhost:1/0", timeout=0.5)
    assert not bad.ok and "s3cret" not in bad.detail and "localhost:1" in bad.detail
    assert check_disk(str(tmp_path), 0).ok
    too_much = check_disk(str(tmp_path), 10**12)
    assert not too_much.ok and str(tmp_path) in too_much.detail
    assert not check_disk("/no/such/path", 0).ok
    assert check_memory(1).ok
    assert not check_memory(10**9).ok


@pytest.mark.redis
def test_health_report(redis_url: str) -> None:
    report = check_health(Settings(redis_url=redis_url), docker=False)
    assert report.healthy
    assert [c.name for c in report.checks] == ["redis", "disk", "memory"]
    sick = check_health(Settings(redis_url=redis_url, health_min_memory_mb=10**9), docker=False)
    assert not sick.healthy
    assert [c.name for c in sick.checks if not c.ok] == ["memory"]


@pytest.mark.redis
def test_health_cli_exit_codes(redis_url: str, monkeypatch) -> None:
    from hivemind.cli import app
    from hivemind_celery.core.settings import get_settings

    monkeypatch.setenv("REDIS_URL", redis_url)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["health", "--json", "--no-docker"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["healthy"] is True
        monkeypatch.setenv("HIVEMIND_HEALTH_MIN_DISK_FREE_MB", str(10**12))
        get_settings.cache_clear()
        result = CliRunner().invoke(app, ["health", "--no-docker"])
        assert result.exit_code == 1
        assert "FAIL" in result.output and "disk" in result.output
    finally:
        get_settings.cache_clear()


@pytest.mark.redis
def test_collector_reads_host_tasks_and_totals(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    active = ["task-a", "task-b"]
    client.set(
        keys.task_usage("task-a"),
        json.dumps({"cpu_percent": 75.0, "cpu_seconds": 12.5, "memory_bytes": 1048576, "memory_percent": 2.0}),
    )
    # task-b has no sample yet (still pulling its image): no series for it
    record_totals(client, "metrics-test", "succeeded", 3.5, 7)
    record_totals(client, "metrics-test", "failed", 1.0, 1)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(client, "metrics-test", active_task_ids=lambda: list(active)))
    text = generate_latest(registry).decode()
    assert 'hivemind_task_cpu_percent{task_id="task-a"} 75.0' in text
    assert 'hivemind_task_memory_bytes{task_id="task-a"} 1.048576e+06' in text
    assert 'task_id="task-b"' not in text
    assert "hivemind_tasks_running 2.0" in text
    assert 'hivemind_tasks_total{status="succeeded"} 1.0' in text
    assert 'hivemind_tasks_total{status="failed"} 1.0' in text
    assert "hivemind_task_cpu_seconds_total 4.5" in text
    assert "hivemind_cpt_awarded_total 8.0" in text
    assert "hivemind_host_memory_available_bytes" in text
    # The task ended: its series are gone at the next scrape, the totals stay.
    active.clear()
    text = generate_latest(registry).decode()
    assert "task-a" not in text
    assert "hivemind_cpt_awarded_total 8.0" in text


@pytest.mark.redis
def test_metrics_http_server(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, worker_id="http-test")
    server, thread = serve(settings, port=0)  # 0: any free port
    try:
        port = server.server_address[1]
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert "hivemind_host_cpu_percent" in body
    assert "hivemind_tasks_running 0.0" in body
