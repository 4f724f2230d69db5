"""The site as a whole: the worker registry and its capacity, the heartbeat that keeps a
worker in it, handing a dead worker's tasks back, the disk gate, the owner's preferences
the host's GPU allocator and the bridge's standing with the Node Pool.

What other packages may use is listed here. The registry, the preferences and the
activity record are imported at once (the bridge and the console need them and they
are light); the worker's own parts (disk and pause gates, heartbeat, GPU allocator,
which load psutil or NVML) only when first asked for."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hivemind_celery.core.lazy import lazy_names
from hivemind_celery.site.activity import HISTORY_MAX, Activity
from hivemind_celery.site.prefs import PreferencesError, PrefsStore, worker_paused
from hivemind_celery.site.registry import (
    MISSED_BEATS,
    Registry,
    SiteCapacity,
    WorkerCapacity,
    WorkerInfo,
    paused_reasons,
)
from hivemind_celery.site.standing import Standing, publish_standing, read_standing

if TYPE_CHECKING:
    from hivemind_celery.site.disk_gate import DiskGate
    from hivemind_celery.site.gpu_allocator import GpuAllocator, GpuRefused, gpus_wanted
    from hivemind_celery.site.heartbeat import REGISTERED, Heartbeat, local_capacity
    from hivemind_celery.site.pause_gate import PauseGate

__all__ = [
    "HISTORY_MAX",
    "MISSED_BEATS",
    "REGISTERED",
    "Activity",
    "DiskGate",
    "GpuAllocator",
    "GpuRefused",
    "Heartbeat",
    "PauseGate",
    "PreferencesError",
    "PrefsStore",
    "Registry",
    "SiteCapacity",
    "Standing",
    "WorkerCapacity",
    "WorkerInfo",
    "gpus_wanted",
    "local_capacity",
    "paused_reasons",
    "publish_standing",
    "read_standing",
    "worker_paused",
]

__getattr__ = lazy_names(
    __name__,
    {
        "DiskGate": "hivemind_celery.site.disk_gate",
        "GpuAllocator": "hivemind_celery.site.gpu_allocator",
        "GpuRefused": "hivemind_celery.site.gpu_allocator",
        "gpus_wanted": "hivemind_celery.site.gpu_allocator",
        "Heartbeat": "hivemind_celery.site.heartbeat",
        "REGISTERED": "hivemind_celery.site.heartbeat",
        "local_capacity": "hivemind_celery.site.heartbeat",
        "PauseGate": "hivemind_celery.site.pause_gate",
    },
)
