"""A stand-in for nvidia-ml-py's `pynvml`, for tests only: there is no GPU on
the test machine, so this module takes the place of the NVIDIA driver.

It is found first on the import path only when a test puts this folder there
(sys.path in-process, PYTHONPATH for a `celery worker` subprocess). The GPUs
it reports come from the NVML_STANDIN_GPUS variable: a JSON list of
{"name", "uuid", "memory_mb"} (and "temperature_c", 40 when absent). It answers the calls usage/gpu.py makes, with
NVML's shapes (memory in bytes, power in milliwatts, names as str); no process
runs on these GPUs, so the per-process lists are empty.
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

NVML_TEMPERATURE_GPU = 0


class NVMLError(Exception):
    pass


def _gpus() -> list[dict]:
    return json.loads(os.environ.get("NVML_STANDIN_GPUS", "[]"))


def nvmlInit() -> None:
    if not _gpus():
        raise NVMLError("NVML_STANDIN_GPUS is empty: no GPU stands in")


def nvmlDeviceGetCount() -> int:
    return len(_gpus())


def nvmlDeviceGetHandleByIndex(index: int) -> dict:
    return _gpus()[index]


def nvmlDeviceGetName(handle: dict) -> str:
    return handle["name"]


def nvmlDeviceGetUUID(handle: dict) -> str:
    return handle["uuid"]


def nvmlDeviceGetMemoryInfo(handle: dict) -> SimpleNamespace:
    total = int(handle["memory_mb"]) * 1024 * 1024
    return SimpleNamespace(total=total, used=0, free=total)


def nvmlDeviceGetUtilizationRates(handle: dict) -> SimpleNamespace:
    return SimpleNamespace(gpu=0, memory=0)


def nvmlDeviceGetTemperature(handle: dict, sensor: int) -> int:
    # For the heat rules' tests: NVML_STANDIN_TEMPERATURES names a JSON file {uuid: °C},
    # read on every call so a test can heat a GPU while a worker runs; else the
    # GPU's own "temperature_c"; else 40.
    path = os.environ.get("NVML_STANDIN_TEMPERATURES", "")
    if path:
        try:
            with open(path) as file:
                temperatures = json.load(file)
            return int(temperatures[handle["uuid"]])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return int(handle.get("temperature_c", 40))


def nvmlDeviceGetPowerUsage(handle: dict) -> int:
    return 30_000


def nvmlDeviceGetComputeRunningProcesses(handle: dict) -> list:
    return []


def nvmlDeviceGetProcessUtilization(handle: dict, since: int) -> list:
    return []
