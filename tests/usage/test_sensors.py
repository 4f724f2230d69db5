"""usage/sensors.py reads the battery and the CPU's temperature through psutil and
the GPUs' through NVML. The test machine has neither battery nor heatable
sensors nor GPU, so psutil's two sensor calls answer from the stand-in in
tests/usage/sensors_standin/ and NVML from tests/usage/nvml_standin/."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import psutil
import pytest

from hivemind_celery.usage import sensors
from tests.usage.gpu_standin import FOUR_GPUS, standin_gpus

STANDIN = Path(__file__).resolve().parent / "sensors_standin" / "sitecustomize.py"


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """write(data): what the stand-in sensors say from now on."""
    path = tmp_path / "sensors.json"
    monkeypatch.delenv("SENSORS_STANDIN_FILE", raising=False)  # loaded unset, it patches nothing itself
    spec = importlib.util.spec_from_file_location("sensors_standin", STANDIN)
    assert spec is not None and spec.loader is not None
    standin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(standin)
    monkeypatch.setenv("SENSORS_STANDIN_FILE", str(path))
    monkeypatch.setattr(psutil, "sensors_battery", standin.sensors_battery)  # restored after the test
    monkeypatch.setattr(psutil, "sensors_temperatures", standin.sensors_temperatures)

    def write(data: dict) -> None:
        path.write_text(json.dumps(data))

    write({})
    return write


def test_battery_states(machine) -> None:
    assert not sensors.on_battery()  # no battery at all: never on battery
    machine({"battery": {"percent": 40, "power_plugged": False}})
    assert sensors.on_battery()
    machine({"battery": {"percent": 40, "power_plugged": True}})
    assert not sensors.on_battery()
    machine({"battery": {"percent": 40, "power_plugged": None}})  # the driver cannot tell: not judged on battery
    assert not sensors.on_battery()


def test_cpu_temperature_prefers_cpu_chips(machine) -> None:
    assert sensors.cpu_temperature_c() is None
    machine({"temperatures": {"acpitz": [45.0], "nvme": [70.0]}})
    assert sensors.cpu_temperature_c() == 45.0  # the ACPI zone only when no CPU chip reports
    machine({"temperatures": {"acpitz": [45.0], "coretemp": [58.0, 66.0, 61.0], "nvme": [70.0]}})
    assert sensors.cpu_temperature_c() == 66.0


def test_read_reads_only_what_a_worker_needs(machine) -> None:
    machine({"battery": {"power_plugged": False}, "temperatures": {"k10temp": [77.0]}})
    assert sensors.read(False, [], battery=True, heat=True) == sensors.Readings(True, 77.0, None)
    assert sensors.read(False, [], battery=False, heat=False) == sensors.Readings(False, None, None)
    hot = [dict(g, temperature_c=40 + 10 * i) for i, g in enumerate(FOUR_GPUS)]
    with standin_gpus(hot):
        assert sensors.read(True, [], battery=True, heat=True) == sensors.Readings(True, None, 70.0)
        assert sensors.read(True, ["0", "1"], battery=False, heat=True).gpu_temperature_c == 50.0
        # the owner's gpus preference narrows what is lent, and so what is watched
        assert sensors.read(True, [], heat=True, owner_gpus=["0", FOUR_GPUS[2]["uuid"]]).gpu_temperature_c == 60.0
