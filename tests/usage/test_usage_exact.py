"""Exact CPU totals on both runtimes, against a burn the task measures itself.

Each burner reports, as its last line, the CPU time the kernel gave it and
every child it waited for (getrusage SELF + CHILDREN, microseconds); that is
the reference. The total the worker reports (the runtime's reading of the
step's cgroup, merged by the usage tracker exactly as a Celery task does,
with a sample interval far longer than the task so that no sample helps) must
never be below it, and may exceed it by at most what running an interpreter
that does nothing costs on the same runtime, measured here in the same test
(the most of ten such runs, one before each burner run: start-up, exit and,
in a container, runc and tini). Every burner runs 10 times, each a separate
run.

The runtimes are driven directly, not through Celery (the tracker is the one
`hivemind.run_task` uses, with its real Redis): on 2 shared cores thirty
3-second container runs through a worker would only add queueing time.
"""

from __future__ import annotations

import uuid

import pytest

from hivemind_celery.core.model import TaskOutcome, TaskSpec, TaskStatus
from hivemind_celery.core.settings import Settings
from hivemind_celery.payloads import workspace
from hivemind_celery.runtime.base import Job
from hivemind_celery.runtime.docker_driver import DockerRuntime
from hivemind_celery.runtime.process import ProcessRuntime
from hivemind_celery.task.meter import UsageMeter
from hivemind_celery.task.outcomes import outcome_from_result
from tests.conftest import PYTHON_IMAGE, make_zip

PAYLOAD = "sha256:" + "0" * 64
REPEATS = 10
# Longer than any task here: the sampler takes its first reading and no other.
SAMPLE_INTERVAL = 600.0
CPUS = 2.0  # every job's reservation

_REPORT = (
    "import resource\n"
    "me = resource.getrusage(resource.RUSAGE_SELF)\n"
    "kids = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print('CPU', me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime)\n"
)
_BURN = (
    "import os, time\n"
    "def burn(seconds):\n"
    "    start = time.process_time()\n"
    "    while time.process_time() - start < seconds:\n"
    "        pass\n"
)
BURNERS = {
    "3 s": _BURN + "burn(3.0)\n" + _REPORT,
    "0.5 s": _BURN + "burn(0.5)\n" + _REPORT,
    # Three forked workers of 0.4 s each and 0.2 s in the parent.
    "forked workers": _BURN + (
        "workers = []\n"
        "for _ in range(3):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        burn(0.4)\n"
        "        os._exit(0)\n"
        "    workers.append(pid)\n"
        "burn(0.2)\n"
        "for pid in workers:\n"
        "    os.waitpid(pid, 0)\n"
    ) + _REPORT,
}
NOTHING = "pass\n"


def make_job(source: str, **spec: object) -> Job:
    data = make_zip({"main.py": source})
    manifest = workspace.inspect_zip(data)
    task_spec = TaskSpec(task_id=f"exact-{uuid.uuid4().hex[:10]}", payload=PAYLOAD,
                         **{"memory_mb": 256, "cpus": CPUS, **spec})
    return Job(spec=task_spec, image=PYTHON_IMAGE, command=workspace.entry_command(manifest),
               workspace_tar=workspace.zip_to_tar(data, manifest), timeout=120,
               setup_command=workspace.setup_command(manifest), pids=64)


def measured_run(runtime, settings: Settings, redis_client, job: Job) -> TaskOutcome:  # type: ignore[no-untyped-def]
    """One run as `hivemind.run_task` does it, minus Celery: runtime, tracker, outcome."""
    tracker = UsageMeter(None, job.spec, redis_client, settings)
    try:
        result = runtime.run(job, on_start=tracker.on_start)
    finally:
        tracker.stop()
    outcome = tracker.complete(outcome_from_result(job.spec, result, settings.worker_id))
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.log_tail
    return outcome


def reference(outcome: TaskOutcome) -> float:
    last = outcome.log_tail.strip().splitlines()[-1]
    assert last.startswith("CPU "), outcome.log_tail
    return float(last.split()[1])


def check_exact(runtime, settings: Settings, redis_client, name: str) -> None:  # type: ignore[no-untyped-def]
    # An empty run before each burner run, so that the allowance is measured
    # under the same load as the burns (the cores are shared).
    empty, burns = [], []
    for _ in range(REPEATS):
        empty.append(measured_run(runtime, settings, redis_client, make_job(NOTHING)))
        burns.append(measured_run(runtime, settings, redis_client, make_job(BURNERS[name])))
    assert all(o.usage is not None for o in empty)
    allowance = max(o.usage.cpu_seconds for o in empty)  # type: ignore[union-attr]
    assert allowance > 0  # an interpreter's start-up costs something; 0 would mean nothing was measured
    for outcome in burns:
        burned = reference(outcome)
        usage = outcome.usage
        assert usage is not None and usage.source == "cgroup"
        assert outcome.main_usage is not None and outcome.main_usage.cpu_seconds == usage.cpu_seconds
        assert usage.cpu_seconds >= burned, f"{name}: counted {usage.cpu_seconds} of {burned} CPU s"
        assert usage.cpu_seconds - burned <= allowance, (
            f"{name}: counted {usage.cpu_seconds} for {burned} CPU s, more than an empty run's {allowance}")
        # CPU % is the total over the task's duration and reserved cores, never a sample's rate.
        expected = usage.cpu_seconds / (outcome.duration * CPUS) * 100
        assert usage.wall_seconds == outcome.duration
        assert usage.cpu_percent == pytest.approx(min(100.0, expected))


@pytest.fixture(scope="module")
def process_runtime(tmp_path_factory) -> tuple[ProcessRuntime, Settings]:  # type: ignore[no-untyped-def]
    settings = Settings(worker_id=f"exact-proc-{uuid.uuid4().hex[:6]}", runtime="process",
                        runtime_dir=str(tmp_path_factory.mktemp("rt")), sample_interval=SAMPLE_INTERVAL)
    return ProcessRuntime(settings), settings


@pytest.fixture(scope="module")
def docker_runtime(docker_client) -> tuple[DockerRuntime, Settings]:  # type: ignore[no-untyped-def]
    settings = Settings(worker_id=f"exact-docker-{uuid.uuid4().hex[:6]}", task_image=PYTHON_IMAGE,
                        sample_interval=SAMPLE_INTERVAL, stop_grace=1)
    runtime = DockerRuntime(settings, client=docker_client)
    yield runtime, settings
    runtime.reap(set())


@pytest.mark.parametrize("name", list(BURNERS))
def test_process_runtime_counts_every_cpu_second(process_runtime, redis_client, name: str) -> None:  # type: ignore[no-untyped-def]
    runtime, settings = process_runtime
    check_exact(runtime, settings, redis_client, name)


@pytest.mark.docker
@pytest.mark.parametrize("name", list(BURNERS))
def test_docker_runtime_counts_every_cpu_second(docker_runtime, redis_client, name: str) -> None:  # type: ignore[no-untyped-def]
    runtime, settings = docker_runtime
    check_exact(runtime, settings, redis_client, name)
