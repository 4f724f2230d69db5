"""What the machine's sensors say, for stepping aside (core/step_aside.py):
whether it runs on its battery (psutil.sensors_battery: no battery, or one
whose plug state is unknown, is not "on battery"), its hottest CPU sensor
(psutil.sensors_temperatures) and its hottest lent GPU (NVML, usage/gpu.py).
Each read is a few small sysfs files; a sensor that fails reads as missing.
"""

from __future__ import annotations

import logging

import psutil

from hivemind_celery.core.step_aside import Readings
from hivemind_celery.usage import gpu

log = logging.getLogger(__name__)

# Chips that measure the CPU package or its cores (Intel, AMD, ARM boards); the
# ACPI thermal zone only where none of them is present (often the CPU on laptops).
CPU_CHIPS = ("coretemp", "k10temp", "zenpower", "cpu_thermal", "cpu-thermal", "soc_thermal")
FALLBACK_CHIPS = ("acpitz",)


def on_battery() -> bool:
    try:
        battery = psutil.sensors_battery()
    except Exception as exc:  # noqa: BLE001 - an odd power supply driver: treat as mains
        log.debug("battery unreadable: %s", exc)
        return False
    return battery is not None and battery.power_plugged is False


def cpu_temperature_c() -> float | None:
    try:
        chips = psutil.sensors_temperatures()
    except Exception as exc:  # noqa: BLE001 - no hwmon here
        log.debug("temperatures unreadable: %s", exc)
        return None
    for names in (CPU_CHIPS, FALLBACK_CHIPS):
        found = [entry.current for name in names for entry in chips.get(name, []) if entry.current is not None]
        if found:
            return float(max(found))
    return None


def gpu_temperature_c(devices: list[str], owner_gpus: list[str] | None = None) -> float | None:
    """The hottest GPU lent: what the operator shares (`devices`), narrowed to the
    owner's `gpus` preference when set."""
    lent = gpu.select(gpu.offered_gpus(devices), owner_gpus or [])
    found = [g.temperature_c for g in lent if g.temperature_c is not None]
    return max(found) if found else None


def read(
    gpu_tasks: bool, gpu_devices: list[str], battery: bool = True, heat: bool = True, owner_gpus: list[str] | None = None
) -> Readings:
    """The readings one worker judges by: the GPUs it lends when it runs GPU tasks,
    the CPU otherwise; only what a rule in force needs is read."""
    return Readings(
        on_battery=battery and on_battery(),
        cpu_temperature_c=cpu_temperature_c() if heat and not gpu_tasks else None,
        gpu_temperature_c=gpu_temperature_c(gpu_devices, owner_gpus) if heat and gpu_tasks else None,
    )
