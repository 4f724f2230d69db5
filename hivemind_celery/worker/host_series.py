"""The host's time series for the console: a snapshot of this machine (CPU,
memory, disk, network, GPUs) every few seconds into a bounded Redis list
(observability/series.py), on a thread of the worker's main process
(celery_app adds this step)."""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis
from celery import bootsteps

from hivemind_celery.core.redis_client import payload_redis
from hivemind_celery.core.settings import get_settings
from hivemind_celery.observability.series import SeriesStore
from hivemind_celery.usage import host

log = logging.getLogger(__name__)

HOST_SAMPLE_INTERVAL = 5.0


def host_point(snap: host.HostSnapshot) -> dict[str, Any]:
    """What the Machine page plots of one snapshot."""
    return {
        "cpu_percent": snap.cpu_percent,
        "load1": snap.load_average[0],
        "memory_percent": snap.memory_percent,
        "memory_used_bytes": snap.memory_total_bytes - snap.memory_available_bytes,
        "memory_total_bytes": snap.memory_total_bytes,
        "disk_percent": snap.disk_percent,
        "disk_free_bytes": snap.disk_free_bytes,
        "net_sent_bytes": snap.net_bytes_sent,
        "net_recv_bytes": snap.net_bytes_recv,
        "gpus": [
            {
                "index": g.index,
                "name": g.name,
                "load_percent": g.load_percent,
                "memory_used_mb": g.memory_used_mb,
                "memory_total_mb": g.memory_total_mb,
                "temperature_c": g.temperature_c,
                "power_w": g.power_w,
            }
            for g in snap.gpus
        ],
    }


class HostSeriesStep(bootsteps.StartStopStep):
    """Samples the host while the worker runs."""

    label = "HiveMind host series"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, parent: Any) -> None:
        settings = get_settings()
        store = SeriesStore(payload_redis(settings))
        worker_id = parent.hostname
        disk = settings.monitor_disk_path
        self._stop.clear()

        def loop() -> None:
            host.snapshot(disk, with_gpus=False)  # primes psutil's CPU interval
            while not self._stop.wait(HOST_SAMPLE_INTERVAL):
                try:
                    store.add_host_sample(worker_id, host_point(host.snapshot(disk)))
                except (redis.RedisError, OSError) as exc:
                    log.warning("host sample not stored: %s", exc, extra={"node_id": worker_id})

        self._thread = threading.Thread(target=loop, name="host-series", daemon=True)
        self._thread.start()

    def stop(self, parent: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)
