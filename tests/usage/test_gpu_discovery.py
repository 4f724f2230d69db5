"""NVML discovery and the owner's choice of GPUs (HIVEMIND_GPU_DEVICES).

There is no GPU on the test machine: the four GPUs of different memory come
from the NVML stand-in (tests/usage/nvml_standin/pynvml.py), which answers
NVML's calls the way nvidia-ml-py does."""

from __future__ import annotations

import pytest

from hivemind_celery.core.settings import Settings
from hivemind_celery.usage import gpu
from tests.usage.gpu_standin import FOUR_GPUS, UUIDS, standin_gpus


@pytest.fixture()
def four_gpus():
    with standin_gpus():
        yield


def test_nvml_lists_index_uuid_name_and_memory(four_gpus) -> None:
    found = gpu.list_gpus()
    assert [(g.index, g.uuid, g.name, g.memory_total_mb) for g in found] == [
        (i, g["uuid"], g["name"], g["memory_mb"]) for i, g in enumerate(FOUR_GPUS)
    ]
    assert found[0].power_w == 30.0  # milliwatts read as watts


def test_without_nvml_there_are_no_gpus() -> None:
    with standin_gpus([]):  # the stand-in's nvmlInit fails, as the real one does without a driver
        assert gpu.list_gpus() == [] and gpu.offered_gpus([]) == []


def test_devices_select_by_index_or_uuid_in_nvml_order(four_gpus) -> None:
    assert [g.index for g in gpu.offered_gpus([UUIDS[3], "1"])] == [1, 3]
    assert [g.index for g in gpu.offered_gpus([])] == [0, 1, 2, 3]  # empty: all NVML sees


def test_unknown_devices_are_skipped_not_fatal(four_gpus, caplog) -> None:
    assert [g.index for g in gpu.offered_gpus(["7", "GPU-nope", "2"])] == [2]
    assert "GPU-nope" in caplog.text and "7" in caplog.text


def test_the_setting_is_read_as_a_comma_list(four_gpus, monkeypatch) -> None:
    monkeypatch.setenv("HIVEMIND_GPU_DEVICES", f"0, {UUIDS[2]}")
    settings = Settings()
    assert settings.gpu_devices == ["0", UUIDS[2]]
    assert [g.uuid for g in gpu.offered_gpus(settings.gpu_devices)] == [UUIDS[0], UUIDS[2]]
