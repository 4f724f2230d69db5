"""A task with a set-up step (requirements.txt) is measured step by step, and
its totals, CPU % and duration all cover the same interval: the whole run.

Both runtimes, driven directly with the tracker `hivemind.run_task` uses (see
test_usage_exact). pip reaches PyPI only through the host's CA bundle (the
worker's default `ca_bundle`); where PyPI cannot be reached the test skips,
saying so.
"""

from __future__ import annotations

import io
import json
import uuid
import zipfile

import pytest

from hivemind_celery.core.model import TaskSpec, TaskStatus
from hivemind_celery.core.settings import Settings
from hivemind_celery.payloads import workspace
from hivemind_celery.payloads.resultzip import EXECUTION_REPORT, build_result_zip
from hivemind_celery.runtime.base import Job
from hivemind_celery.runtime.docker_driver import DockerRuntime
from hivemind_celery.runtime.process import ProcessRuntime
from hivemind_celery.task.meter import UsageMeter
from hivemind_celery.task.outcomes import outcome_from_result
from tests.services_kit import PYTHON_IMAGE, make_zip
from tests.usage.burn_kit import CPUS, reference

PAYLOAD = "sha256:" + "0" * 64
MAIN = (
    "import resource, time, six\n"
    "start = time.process_time()\n"
    "while time.process_time() - start < 0.5:\n"
    "    pass\n"
    "me = resource.getrusage(resource.RUSAGE_SELF)\n"
    "kids = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print('CPU', me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime)\n"
)


def setup_job() -> Job:
    data = make_zip({"requirements.txt": "six==1.16.0\n", "main.py": MAIN})
    manifest = workspace.inspect_zip(data)
    spec = TaskSpec(task_id=f"setup-{uuid.uuid4().hex[:10]}", payload=PAYLOAD, memory_mb=256, cpus=CPUS)
    return Job(
        spec=spec,
        image=PYTHON_IMAGE,
        command=workspace.entry_command(manifest),
        workspace_tar=workspace.zip_to_tar(data, manifest),
        timeout=120,
        setup_command=workspace.setup_command(manifest),
        pids=64,
    )


def check_setup_accounting(runtime, settings: Settings, redis_client) -> None:  # type: ignore[no-untyped-def]
    job = setup_job()
    tracker = UsageMeter(None, job.spec, redis_client, settings)
    try:
        result = runtime.run(job, on_start=tracker.on_start)
    finally:
        tracker.stop()
    if result.status is not TaskStatus.SUCCEEDED and "Successfully installed" not in result.log_tail:
        pytest.skip(f"PyPI not reachable here: {result.reason}: {result.log_tail[-500:]}")
    outcome = tracker.complete(outcome_from_result(job.spec, result, settings.worker_id))
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.log_tail
    setup, main, usage = outcome.setup_usage, outcome.main_usage, outcome.usage
    assert setup is not None and main is not None and usage is not None
    assert setup.source == main.source == usage.source == "cgroup"
    assert setup.cpu_seconds > 0.1  # pip's own start-up alone costs more than this
    assert main.cpu_seconds >= reference(outcome)  # the main step's burn, all of it
    # The whole run is both steps, over the task's duration; each step over its own time.
    assert usage.cpu_seconds == pytest.approx(setup.cpu_seconds + main.cpu_seconds)
    assert usage.memory_peak_bytes == max(setup.memory_peak_bytes, main.memory_peak_bytes)
    assert usage.wall_seconds == outcome.duration
    assert 0 < setup.wall_seconds + main.wall_seconds <= outcome.duration
    assert usage.cpu_percent == pytest.approx(usage.cpu_seconds / (outcome.duration * CPUS) * 100)
    assert main.cpu_percent == pytest.approx(min(100.0, main.cpu_seconds / (main.wall_seconds * CPUS) * 100))
    assert outcome.reward is not None
    # execution_report.json says the same, step by step.
    zipped = build_result_zip(result.workspace_tar, outcome, node="node-1")
    report = json.loads(zipfile.ZipFile(io.BytesIO(zipped)).read(EXECUTION_REPORT))
    assert report["setup_usage"]["cpu_seconds"] == setup.cpu_seconds
    assert report["main_usage"]["cpu_seconds"] == main.cpu_seconds
    assert report["usage"]["cpu_seconds"] == usage.cpu_seconds
    assert report["usage"]["wall_seconds"] == report["duration_seconds"]


def test_process_runtime_reports_both_steps(redis_client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(
        worker_id=f"setup-proc-{uuid.uuid4().hex[:6]}", runtime="process", runtime_dir=str(tmp_path / "rt"), sample_interval=600
    )
    check_setup_accounting(ProcessRuntime(settings), settings, redis_client)


@pytest.mark.docker
def test_docker_runtime_reports_both_steps(docker_client, redis_client) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(
        worker_id=f"setup-docker-{uuid.uuid4().hex[:6]}", task_image=PYTHON_IMAGE, sample_interval=600, stop_grace=1
    )
    runtime = DockerRuntime(settings, client=docker_client)
    try:
        check_setup_accounting(runtime, settings, redis_client)
    finally:
        runtime.reap(set())
