"""Prometheus metrics of a worker, served from its main process.

Why a scrape-time collector in the main process, and not gauges set by the
tasks: with the prefork pool a task runs in a child process, and whatever a
child records in prometheus_client's default registry stays in that child,
invisible to the HTTP server in the parent. prometheus_client's multiprocess
mode could merge them, but it must be set up (PROMETHEUS_MULTIPROC_DIR) before
any import in every process, it cannot drop a per-task label when the task
ends, and it loses nothing more than we already keep elsewhere. The child
already writes what matters to Redis: the latest usage sample per running task
(`keys.task_usage`, also relayed by the bridge) and this worker's running
totals (`keys.worker_totals`). So at each scrape the collector reads the host
with psutil/NVML, the usage of the tasks now active in this worker, and the
totals: per-task series exist exactly while the task runs, with nothing to
remove, and counters survive pool children being replaced.

Served by the worker's `MetricsStep` (worker/metrics.py) on HIVEMIND_METRICS_PORT (0: off).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import redis
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hivemind_celery.core import keys
from hivemind_celery.core.redis_client import payload_redis
from hivemind_celery.core.settings import Settings
from hivemind_celery.core.units import MiB, as_text
from hivemind_celery.usage import host

log = logging.getLogger(__name__)


def _active_task_ids() -> list[str]:
    from celery.worker import state

    return sorted({request.id for request in state.active_requests if request.id})


class WorkerCollector(Collector):
    """Host, per-task and total metrics, read at scrape time."""

    def __init__(
        self,
        client: redis.Redis,
        worker_id: str,
        disk_path: str = "/",
        active_task_ids: Callable[[], Iterable[str]] = _active_task_ids,
    ) -> None:
        self.client = client
        self.worker_id = worker_id
        self.disk_path = disk_path
        self.active_task_ids = active_task_ids

    def collect(self) -> Iterator[Metric]:
        yield from self._host()
        try:
            yield from self._tasks()
            yield from self._totals()
        except redis.RedisError as exc:
            log.warning("metrics: Redis not readable: %s", exc)

    def _host(self) -> Iterator[Metric]:
        snap = host.snapshot(self.disk_path)
        for name, doc, value in (
            ("hivemind_host_cpu_percent", "Host CPU use since the previous scrape (%).", snap.cpu_percent),
            ("hivemind_host_load1", "Host 1-minute load average.", snap.load_average[0]),
            ("hivemind_host_memory_available_bytes", "Host memory available.", snap.memory_available_bytes),
            ("hivemind_host_memory_total_bytes", "Host memory installed.", snap.memory_total_bytes),
            ("hivemind_host_memory_percent", "Host memory in use (%).", snap.memory_percent),
            ("hivemind_host_disk_free_bytes", "Free space on the watched filesystem.", snap.disk_free_bytes),
            ("hivemind_host_disk_percent", "Watched filesystem in use (%).", snap.disk_percent),
        ):
            yield GaugeMetricFamily(name, doc, value=value)
        yield CounterMetricFamily("hivemind_host_network_sent_bytes", "Bytes sent by the host.", value=snap.net_bytes_sent)
        yield CounterMetricFamily(
            "hivemind_host_network_received_bytes", "Bytes received by the host.", value=snap.net_bytes_recv
        )
        load = GaugeMetricFamily("hivemind_gpu_load_percent", "GPU load (%).", labels=["gpu", "name"])
        used = GaugeMetricFamily("hivemind_gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu", "name"])
        temp = GaugeMetricFamily("hivemind_gpu_temperature_celsius", "GPU temperature.", labels=["gpu", "name"])
        power = GaugeMetricFamily("hivemind_gpu_power_watts", "GPU power draw.", labels=["gpu", "name"])
        for gpu in snap.gpus:
            labels = [str(gpu.index), gpu.name]
            load.add_metric(labels, gpu.load_percent)
            used.add_metric(labels, gpu.memory_used_mb * MiB)
            if gpu.temperature_c is not None:
                temp.add_metric(labels, gpu.temperature_c)
            if gpu.power_w is not None:
                power.add_metric(labels, gpu.power_w)
        yield from (load, used, temp, power)

    def _tasks(self) -> Iterator[Metric]:
        cpu = GaugeMetricFamily(
            "hivemind_task_cpu_percent", "CPU use of a running task, of its reserved cores (%).", labels=["task_id"]
        )
        cpu_s = GaugeMetricFamily("hivemind_task_cpu_seconds", "CPU seconds a running task used so far.", labels=["task_id"])
        mem = GaugeMetricFamily("hivemind_task_memory_bytes", "Memory of a running task.", labels=["task_id"])
        mem_pct = GaugeMetricFamily(
            "hivemind_task_memory_percent", "Memory of a running task, of its limit (%).", labels=["task_id"]
        )
        ids = list(self.active_task_ids())
        samples = self.client.mget([keys.task_usage(task_id) for task_id in ids]) if ids else []
        for task_id, raw in zip(ids, samples):
            if raw is None:
                continue  # not sampled yet (image pull, set-up step)
            try:
                sample: dict[str, Any] = json.loads(raw)
                cpu.add_metric([task_id], float(sample["cpu_percent"]))
                cpu_s.add_metric([task_id], float(sample["cpu_seconds"]))
                mem.add_metric([task_id], float(sample["memory_bytes"]))
                mem_pct.add_metric([task_id], float(sample["memory_percent"]))
            except (ValueError, KeyError, TypeError):
                log.warning("metrics: unreadable usage sample", extra={"task_id": task_id})
        running = GaugeMetricFamily("hivemind_tasks_running", "Tasks running in this worker now.", value=len(ids))
        yield from (cpu, cpu_s, mem, mem_pct, running)

    def _totals(self) -> Iterator[Metric]:
        totals = {as_text(k): as_text(v) for k, v in self.client.hgetall(keys.worker_totals(self.worker_id)).items()}
        tasks = CounterMetricFamily("hivemind_tasks", "Tasks this worker finished, by status.", labels=["status"])
        for name, value in sorted(totals.items()):
            if name.startswith("tasks:"):
                tasks.add_metric([name.removeprefix("tasks:")], float(value))
        yield tasks
        yield CounterMetricFamily(
            "hivemind_task_cpu_seconds", "CPU seconds used by finished tasks.", value=float(totals.get("cpu_seconds", 0))
        )
        yield CounterMetricFamily(
            "hivemind_cpt_awarded", "CPT credit earned by finished tasks.", value=float(totals.get("cpt_awarded", 0))
        )


def serve(settings: Settings, client: redis.Redis | None = None, port: int | None = None) -> tuple[Any, Any]:
    """Start the HTTP server on its own registry; returns (server, thread)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(client or payload_redis(settings), settings.worker_id, settings.monitor_disk_path))
    return start_http_server(settings.metrics_port if port is None else port, registry=registry)
