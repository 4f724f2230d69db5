"""GPUs through NVML (nvidia-ml-py), GPUtil as a fallback, nothing otherwise.

A machine without a GPU, without the NVIDIA driver or without the Python
packages gets an empty list and zero usage, never an error: the same worker
code runs on CPU and GPU machines. GPUtil 1.4 imports `distutils`, which
Python 3.12 removed, so its import is guarded like NVML's.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass
from typing import Any

from hivemind_celery.core.settings import get_settings
from hivemind_celery.core.units import MiB, as_text

log = logging.getLogger(__name__)

_lock = threading.Lock()
_nvml: Any = None
_nvml_tried = False


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    uuid: str
    load_percent: float
    memory_used_mb: int
    memory_total_mb: int
    temperature_c: float | None
    power_w: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def nvml() -> Any:
    """The initialised pynvml module, or None where NVML cannot be used."""
    global _nvml, _nvml_tried
    with _lock:
        if not _nvml_tried:
            _nvml_tried = True
            try:
                import pynvml

                pynvml.nvmlInit()
                _nvml = pynvml
            except Exception as exc:  # noqa: BLE001 - no package, no driver, no device: all mean "no GPU"
                log.debug("NVML not available: %s", exc)
        return _nvml


def _optional(call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except Exception:  # noqa: BLE001 - some boards report no temperature or power
        return None


def _nvml_gpus(lib: Any) -> list[GpuInfo]:
    gpus = []
    for index in range(lib.nvmlDeviceGetCount()):
        handle = lib.nvmlDeviceGetHandleByIndex(index)
        memory = lib.nvmlDeviceGetMemoryInfo(handle)
        util = _optional(lib.nvmlDeviceGetUtilizationRates, handle)
        temperature = _optional(lib.nvmlDeviceGetTemperature, handle, lib.NVML_TEMPERATURE_GPU)
        power_mw = _optional(lib.nvmlDeviceGetPowerUsage, handle)
        gpus.append(
            GpuInfo(
                index=index,
                name=as_text(lib.nvmlDeviceGetName(handle)),
                uuid=as_text(lib.nvmlDeviceGetUUID(handle)),
                load_percent=float(util.gpu) if util is not None else 0.0,
                memory_used_mb=int(memory.used) // MiB,
                memory_total_mb=int(memory.total) // MiB,
                temperature_c=float(temperature) if temperature is not None else None,
                power_w=power_mw / 1000.0 if power_mw is not None else None,
            )
        )
    return gpus


def _gputil_gpus() -> list[GpuInfo]:
    try:
        import GPUtil  # type: ignore[import-not-found]

        found = GPUtil.getGPUs()
    except Exception:  # noqa: BLE001 - missing, broken on 3.12, or no nvidia-smi
        return []
    return [
        GpuInfo(
            index=int(gpu.id),
            name=str(gpu.name),
            uuid=str(gpu.uuid),
            load_percent=float(gpu.load) * 100.0,
            memory_used_mb=int(gpu.memoryUsed),
            memory_total_mb=int(gpu.memoryTotal),
            temperature_c=float(gpu.temperature),
            power_w=None,
        )
        for gpu in found
    ]


def list_gpus() -> list[GpuInfo]:
    """Every GPU of this machine with its current load; [] where there is none."""
    lib = nvml()
    if lib is not None:
        try:
            return _nvml_gpus(lib)
        except Exception:  # noqa: BLE001 - a driver fault must not stop the worker
            log.exception("reading GPUs through NVML failed")
            return []
    return _gputil_gpus()


def select(gpus: list[GpuInfo], devices: list[str]) -> list[GpuInfo]:
    """The GPUs named in `devices` (NVML indices or UUIDs), in NVML's order;
    all of them when `devices` is empty. A name that matches no GPU is logged
    and skipped, so a card taken out never stops the worker."""
    if not devices:
        return list(gpus)
    wanted = {str(d).strip() for d in devices if str(d).strip()}
    chosen = [g for g in gpus if str(g.index) in wanted or g.uuid in wanted]
    unknown = wanted - {str(g.index) for g in chosen} - {g.uuid for g in chosen}
    if unknown:
        log.warning("GPU devices not found by NVML (skipped): %s", ", ".join(sorted(unknown)))
    return chosen


def offered_gpus(devices: list[str] | None = None) -> list[GpuInfo]:
    """The GPUs this host shares: what NVML sees, filtered by `devices`
    (HIVEMIND_GPU_DEVICES when None; a preference passes its own list)."""
    if devices is None:
        devices = get_settings().gpu_devices
    return select(list_gpus(), devices)


def process_usage(pids: set[int]) -> tuple[float, int]:
    """(GPU utilisation %, GPU memory bytes) of these host PIDs together.

    Utilisation is the processes' SM share, averaged over the GPUs they use;
    (0.0, 0) where there is no NVML or the processes use no GPU.
    """
    lib = nvml()
    if lib is None or not pids:
        return 0.0, 0
    memory = 0
    per_device: list[float] = []
    try:
        for index in range(lib.nvmlDeviceGetCount()):
            handle = lib.nvmlDeviceGetHandleByIndex(index)
            running = _optional(lib.nvmlDeviceGetComputeRunningProcesses, handle) or []
            mine = [proc for proc in running if proc.pid in pids]
            if not mine:
                continue
            memory += sum(int(proc.usedGpuMemory or 0) for proc in mine)
            samples = _optional(lib.nvmlDeviceGetProcessUtilization, handle, 0) or []
            per_device.append(float(sum(s.smUtil for s in samples if s.pid in pids)))
    except Exception:  # noqa: BLE001
        log.exception("reading per-process GPU use failed")
        return 0.0, 0
    percent = sum(per_device) / len(per_device) if per_device else 0.0
    return min(100.0, percent), memory
