"""A stand-in for the machine's battery and thermal sensors, for tests only:
the test machine has no battery and its hwmon sensors cannot be heated on
demand, so this takes their place.

Python imports `sitecustomize` at start-up when it is on the import path: a
test puts this folder on PYTHONPATH of a `celery worker` subprocess (or on
sys.path in-process) and names a JSON file in SENSORS_STANDIN_FILE. From then
on psutil.sensors_battery() and psutil.sensors_temperatures() answer from that
file, read afresh on every call so the test can flip it while the worker runs:

    {"battery": {"percent": 80, "power_plugged": false} | null,
     "temperatures": {"coretemp": [55.0, 61.0]}}

with psutil's own shapes (sbattery, shwtemp). Nothing else of psutil changes.
"""

from __future__ import annotations

import json
import os
from collections import namedtuple

import psutil

# psutil's own field names (its named tuples live in a private module)
sbattery = namedtuple("sbattery", "percent secsleft power_plugged")
shwtemp = namedtuple("shwtemp", "label current high critical")


def _read() -> dict:
    path = os.environ.get("SENSORS_STANDIN_FILE", "")
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def sensors_battery():  # type: ignore[no-untyped-def]
    battery = _read().get("battery")
    if not battery:
        return None
    return sbattery(
        percent=battery.get("percent", 50), secsleft=psutil.POWER_TIME_UNKNOWN, power_plugged=battery.get("power_plugged")
    )


def sensors_temperatures(fahrenheit: bool = False):  # type: ignore[no-untyped-def]
    chips = _read().get("temperatures") or {}
    return {name: [shwtemp(label="", current=float(t), high=None, critical=None) for t in temps] for name, temps in chips.items()}


if os.environ.get("SENSORS_STANDIN_FILE"):
    psutil.sensors_battery = sensors_battery
    psutil.sensors_temperatures = sensors_temperatures
