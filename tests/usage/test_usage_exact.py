"""Exact CPU totals on both runtimes, against a burn the task measures itself.

Each burner reports, as its last line, the CPU time the kernel gave it and
every child it waited for (getrusage SELF + CHILDREN, microseconds); that is
the reference. The total the worker reports (the runtime's reading of the
step's cgroup, merged by the usage tracker exactly as a Celery task does,
with a sample interval far longer than the task so that no sample helps) must
never be below it, and may exceed it by at most what running an interpreter
that does nothing costs on the same runtime, measured here in the same test
(the most of ten such runs, one before each burner run: start-up, exit and,
in a container, runc and tini), plus how much those ten differ among
themselves: on shared cores that cost varies by a few milliseconds from run
to run, and a burner's start-up varies as much. Every burner runs 10 times,
each a separate run.

The runtimes are driven directly, not through Celery (the tracker is the one
`hivemind.run_task` uses, with its real Redis): on 2 shared cores thirty
3-second container runs through a worker would only add queueing time.
"""

from __future__ import annotations

import uuid

import pytest

from hivemind_celery.core.settings import Settings
from hivemind_celery.runtime.docker_driver import DockerRuntime
from hivemind_celery.runtime.process import ProcessRuntime
from tests.services_kit import PYTHON_IMAGE
from tests.usage.burn_kit import BURNERS, CPUS, NOTHING, make_job, measured_run, reference

REPEATS = 10
# Longer than any task here: the sampler takes its first reading and no other.
SAMPLE_INTERVAL = 600.0


def check_exact(runtime, settings: Settings, redis_client, name: str) -> None:  # type: ignore[no-untyped-def]
    # An empty run before each burner run, so that the allowance is measured
    # under the same load as the burns (the cores are shared).
    empty, burns = [], []
    for _ in range(REPEATS):
        empty.append(measured_run(runtime, settings, redis_client, make_job(NOTHING)))
        burns.append(measured_run(runtime, settings, redis_client, make_job(BURNERS[name])))
    assert all(o.usage is not None for o in empty)
    costs = [o.usage.cpu_seconds for o in empty]  # type: ignore[union-attr]
    assert min(costs) > 0  # an interpreter's start-up costs something; 0 would mean nothing was measured
    allowance = max(costs) + (max(costs) - min(costs))
    for outcome in burns:
        burned = reference(outcome)
        usage = outcome.usage
        assert usage is not None and usage.source == "cgroup"
        assert outcome.main_usage is not None and outcome.main_usage.cpu_seconds == usage.cpu_seconds
        assert usage.cpu_seconds >= burned, f"{name}: counted {usage.cpu_seconds} of {burned} CPU s"
        assert usage.cpu_seconds - burned <= allowance, (
            f"{name}: counted {usage.cpu_seconds} for {burned} CPU s, more than an empty run's {allowance}"
        )
        # CPU % is the total over the task's duration and reserved cores, never a sample's rate.
        expected = usage.cpu_seconds / (outcome.duration * CPUS) * 100
        assert usage.wall_seconds == outcome.duration
        assert usage.cpu_percent == pytest.approx(min(100.0, expected))


@pytest.fixture(scope="module")
def process_runtime(tmp_path_factory) -> tuple[ProcessRuntime, Settings]:  # type: ignore[no-untyped-def]
    settings = Settings(
        worker_id=f"exact-proc-{uuid.uuid4().hex[:6]}",
        runtime="process",
        runtime_dir=str(tmp_path_factory.mktemp("rt")),
        sample_interval=SAMPLE_INTERVAL,
    )
    return ProcessRuntime(settings), settings


@pytest.fixture(scope="module")
def docker_runtime(docker_client) -> tuple[DockerRuntime, Settings]:  # type: ignore[no-untyped-def]
    settings = Settings(
        worker_id=f"exact-docker-{uuid.uuid4().hex[:6]}", task_image=PYTHON_IMAGE, sample_interval=SAMPLE_INTERVAL, stop_grace=1
    )
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
