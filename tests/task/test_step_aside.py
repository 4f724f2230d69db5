"""Stepping aside for the machine, end to end: a real `celery worker`
subprocess, real Redis, real dockerd. The machine has no battery and no
heatable sensor, so the worker's psutil answers its two sensor calls from the
stand-in in tests/usage/sensors_standin/ (a sitecustomize on its PYTHONPATH,
reading the JSON file this test flips). Everything else is the real path: the
preferences step reads the sensors, decides, publishes the mode, and the
running task's container freezes, then thaws once mains power has been back
for resume_after_seconds."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from hivemind_celery.core.model import TaskStatus
from hivemind_celery.core.settings import Settings
from hivemind_celery.payloads.store import PayloadStore
from hivemind_celery.task.outcomes import celery_outcome
from tests.services_kit import ROOT
from tests.task.pause_kit import freezer_state, running_container, submit, wait_for
from tests.usage.gpu_standin import UUIDS
from tests.usage.gpu_standin import worker_env as gpu_worker_env

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]

STANDIN_DIR = Path(__file__).resolve().parents[1] / "usage" / "sensors_standin"
# 40 ticks of 0.25 s: about 10 s of running time.
TICKING = {
    "main.py": "import time\nfor i in range(40):\n    print('tick', i, flush=True)\n    time.sleep(0.25)\n"
    "print('done', flush=True)\n"
}
RESUME_AFTER = 3.0


@pytest.fixture(scope="module")
def store(redis_client, redis_url) -> PayloadStore:
    return PayloadStore(redis_client, Settings(redis_url=redis_url))


def test_unplugging_freezes_the_task_and_mains_power_thaws_it(
    start_worker, celery_app, store, prefs, redis_client, docker_client, tmp_path
) -> None:
    machine = tmp_path / "sensors.json"

    def plugged(on_mains: bool) -> None:
        machine.write_text(json.dumps({"battery": {"percent": 70, "power_plugged": on_mains}}))

    plugged(True)
    prefs.update(pause_on_battery=True, resume_after_seconds=RESUME_AFTER)
    worker = start_worker("cpu", concurrency=1, PYTHONPATH=f"{STANDIN_DIR}:{ROOT}", SENSORS_STANDIN_FILE=str(machine))
    spec, result = submit(celery_app, store, TICKING, timeout=60)
    container = running_container(docker_client, spec.task_id)
    wait_for(
        lambda: b"tick 2" in b"".join(f for _, e in redis_client.xrange(f"hm:task:{spec.task_id}:output") for f in e.values()),
        "the task ticking",
    )
    assert freezer_state(container) == "THAWED" and not prefs.mode().paused

    plugged(False)
    wait_for(lambda: freezer_state(container) == "FROZEN", "the container frozen on battery", limit=10)
    mode = prefs.mode()
    assert mode.paused and mode.reason.startswith("the machine runs on its battery"), mode
    plugged(True)
    back_at = time.monotonic()
    # hysteresis: still frozen while mains power has not been back RESUME_AFTER seconds
    time.sleep(RESUME_AFTER / 2)
    assert freezer_state(container) == "FROZEN"
    wait_for(lambda: freezer_state(container) == "THAWED", "the container thawed on mains power", limit=15)
    assert time.monotonic() - back_at >= RESUME_AFTER
    outcome = celery_outcome(result, 120)
    assert outcome.status is TaskStatus.SUCCEEDED, (outcome.reason, worker.log())
    assert "task frozen" in worker.log() and "task thawed" in worker.log()
    worker.stop()


def test_a_hot_cpu_pauses_the_cpu_worker_until_it_cools_below_the_margin(start_worker, prefs, tmp_path) -> None:
    """No task needed: the site's published mode follows the stand-in CPU sensor."""
    machine = tmp_path / "sensors.json"

    def cpu_at(celsius: float) -> None:
        machine.write_text(json.dumps({"temperatures": {"coretemp": [celsius - 4, celsius]}}))

    cpu_at(60)
    prefs.update(max_cpu_temperature_c=80, temperature_margin_c=10, resume_after_seconds=0)
    worker = start_worker("cpu", concurrency=1, PYTHONPATH=f"{STANDIN_DIR}:{ROOT}", SENSORS_STANDIN_FILE=str(machine))
    wait_for(lambda: prefs.client.hlen("hm:site:modes") and not prefs.mode().paused, "running first", 15)
    cpu_at(85)
    hot = wait_for(lambda: prefs.mode().paused and prefs.mode(), "the heat pause", limit=15)
    assert hot.reason.startswith("the CPU is too hot (85 °C > 80 °C)")
    cpu_at(75)  # under the limit, not under the margin: stays paused
    time.sleep(6)
    assert prefs.mode().paused
    cpu_at(69)
    wait_for(lambda: not prefs.mode().paused, "the resume once cool", limit=15)
    worker.stop()


def test_a_hot_gpu_pauses_the_gpu_worker_and_not_for_a_hot_cpu(start_worker, prefs, tmp_path) -> None:
    """A GPU worker on the NVML stand-in (tests/usage/nvml_standin/: no GPU here) lending
    two GPUs: it steps aside when one of them is hot, not when only the CPU is."""
    temperatures, machine = tmp_path / "gpu-temperatures.json", tmp_path / "sensors.json"

    def heat(gpu0: float, gpu1: float, cpu: float) -> None:
        temperatures.write_text(json.dumps({UUIDS[0]: gpu0, UUIDS[1]: gpu1}))
        machine.write_text(json.dumps({"temperatures": {"coretemp": [cpu]}}))

    heat(50, 55, 95)
    prefs.update(max_cpu_temperature_c=80, max_gpu_temperature_c=85, resume_after_seconds=0)
    env = gpu_worker_env()
    worker = start_worker(
        "gpu",
        concurrency=1,
        HIVEMIND_RUNTIME="process",
        HIVEMIND_GPU_DEVICES=f"{UUIDS[0]},1",
        NVML_STANDIN_TEMPERATURES=str(temperatures),
        SENSORS_STANDIN_FILE=str(machine),
        **{**env, "PYTHONPATH": f"{STANDIN_DIR}:{env['PYTHONPATH']}"},
    )
    wait_for(lambda: prefs.client.hlen("hm:site:modes"), "the mode published", 15)
    time.sleep(6)  # past an idle worker's check interval: a hot CPU is not a GPU worker's concern
    assert not prefs.mode().paused, prefs.mode()
    heat(50, 91, 60)
    hot = wait_for(lambda: prefs.mode().paused and prefs.mode(), "the GPU heat pause", limit=15)
    assert hot.reason.startswith("the GPU is too hot (91 °C > 85 °C)")
    heat(50, 70, 60)
    wait_for(lambda: not prefs.mode().paused, "the resume once the GPU cooled", limit=15)
    worker.stop()
