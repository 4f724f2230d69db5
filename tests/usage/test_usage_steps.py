"""Per-step totals: the cgroups the runtimes give each step (found, read,
killed, removed, reaped) and how the tracker combines the steps.

Real cgroups on this host (root, cgroup v1 with a cgroup2 mount beside it),
real processes and the real dockerd.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import psutil
import pytest

from hivemind_celery.core.model import UsageSummary
from hivemind_celery.core.settings import Settings
from hivemind_celery.runtime.docker_driver import DockerRuntime
from hivemind_celery.runtime.process import ProcessRuntime
from hivemind_celery.usage import task_cgroup
from hivemind_celery.usage.totals import step_totals, whole_run
from tests.services_kit import PYTHON_IMAGE
from tests.usage.burn_kit import BURN, BURNERS, NOTHING, REPORT, make_job, measured_run, reference

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="making cgroups needs root")

# The main step starts a burner in a session of its own (out of reach of the
# process group kill), lets it burn, and exits without waiting for it. It
# reports its own CPU time plus the burner's so far, from /proc.
ESCAPING = (
    "import os, subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'while True: pass'], start_new_session=True)\n"
    "time.sleep(1.0)\n"
    "fields = open(f'/proc/{child.pid}/stat').read().rsplit(')', 1)[1].split()\n"
    "theirs = (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')\n"
    "print('ESCAPEE', child.pid)\n"
    "import resource\n"
    "me = resource.getrusage(resource.RUSAGE_SELF)\n"
    "print('CPU', me.ru_utime + me.ru_stime + theirs)\n"
)


def process_runtime(tmp_path: Path, worker: str | None = None) -> tuple[ProcessRuntime, Settings]:
    settings = Settings(
        worker_id=worker or f"steps-proc-{uuid.uuid4().hex[:6]}",
        runtime="process",
        runtime_dir=str(tmp_path / "rt"),
        sample_interval=600,
    )
    return ProcessRuntime(settings), settings


@needs_root
def test_process_step_that_escaped_its_group_is_counted_and_killed(tmp_path, redis_client) -> None:  # type: ignore[no-untyped-def]
    runtime, settings = process_runtime(tmp_path)
    outcome = measured_run(runtime, settings, redis_client, make_job(ESCAPING))
    pid = int(next(line for line in outcome.log_tail.splitlines() if line.startswith("ESCAPEE")).split()[1])
    assert outcome.usage is not None and outcome.usage.source == "cgroup"
    assert outcome.usage.cpu_seconds >= reference(outcome)
    try:
        assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # killed, not yet reaped by its new parent
    except psutil.NoSuchProcess:
        pass
    name = task_cgroup.leaf_name(settings.worker_id, outcome.task_id, "main")
    assert task_cgroup.find(name) is None  # removed after the read


def test_process_runtime_without_a_cgroup_uses_the_reaped_rusage(tmp_path, redis_client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`task_cgroup.create` answering None stands in for a host where no cgroup
    can be made (a worker that is not root); this host could make one."""
    monkeypatch.setattr(task_cgroup, "create", lambda name: None)
    runtime, settings = process_runtime(tmp_path)
    allowance = max(measured_run(runtime, settings, redis_client, make_job(NOTHING)).usage.cpu_seconds for _ in range(3))
    outcome = measured_run(runtime, settings, redis_client, make_job(BURNERS["forked workers"]))
    usage = outcome.usage
    assert usage is not None and usage.source == "rusage"
    assert reference(outcome) <= usage.cpu_seconds <= reference(outcome) + allowance
    assert usage.memory_peak_bytes > 0


@needs_root
def test_process_kill_from_another_runtime_reaches_the_steps_cgroup(tmp_path, redis_client) -> None:  # type: ignore[no-untyped-def]
    cgroup = task_cgroup.create(task_cgroup.leaf_name("steps-kill", "t-1", "main"))
    assert cgroup is not None
    proc = psutil.Popen(["python3", "-c", "import time; time.sleep(60)"])
    for path in cgroup.procs_files:
        Path(path).write_text(str(proc.pid))
    try:
        assert cgroup.pids() == {proc.pid}
        assert cgroup.kill_all()
        assert proc.wait(10) == -9
    finally:
        assert cgroup.remove()
    assert task_cgroup.find(task_cgroup.leaf_name("steps-kill", "t-1", "main")) is None


@pytest.mark.docker
@needs_root
def test_docker_step_parents_are_removed_and_reaped(docker_client, redis_client) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(
        worker_id=f"steps-docker-{uuid.uuid4().hex[:6]}", task_image=PYTHON_IMAGE, sample_interval=600, stop_grace=1
    )
    runtime = DockerRuntime(settings, client=docker_client)
    job = make_job(BURN + "burn(0.2)\n" + REPORT)
    parent = task_cgroup.docker_parent(settings.worker_id, job.spec.task_id, "main")
    result = runtime.run(job, defer_cleanup=True)  # leaves the container and its parent cgroup
    assert result.step_usage["main"].source == "cgroup"
    assert task_cgroup.locate(parent) is not None
    again = DockerRuntime(settings, client=docker_client)  # a restarted worker knows nothing of it
    again.reap({job.spec.task_id})
    assert task_cgroup.locate(parent) is not None  # kept: its task is still wanted
    again.reap(set())
    assert task_cgroup.locate(parent) is None
    assert not any((Path(m) / parent.strip("/")).exists() for m in Path("/sys/fs/cgroup").iterdir())
    runtime.cleanup(job.spec.task_id)  # the first runtime's own clean-up finds nothing left: no error

    # A normal run leaves nothing behind either.
    outcome = measured_run(runtime, settings, redis_client, make_job(NOTHING))
    assert task_cgroup.locate(task_cgroup.docker_parent(settings.worker_id, outcome.task_id, "main")) is None


def test_exact_step_totals_win_and_the_sampler_adds_what_only_it_sees() -> None:
    exact = UsageSummary(
        cpu_seconds=2.0, cpu_user_seconds=1.5, cpu_system_seconds=0.5, memory_peak_bytes=100, source="cgroup", wall_seconds=4.0
    )
    sampled = UsageSummary(
        cpu_seconds=0.01,
        memory_peak_bytes=150,
        pids_peak=3,
        gpu_percent=40.0,
        gpu_memory_peak_bytes=7,
        samples=1,
        source="cgroup",
        cpu_percent=100.0,
    )
    main = step_totals(exact, sampled, cpus=1.0, memory_limit_bytes=1000)
    assert main is not None
    assert (main.cpu_seconds, main.memory_peak_bytes, main.pids_peak, main.gpu_percent) == (2.0, 150, 3, 40.0)
    assert main.cpu_percent == pytest.approx(2.0 / 4.0 * 100)  # over the step's time, not the sample's rate
    assert main.memory_percent == pytest.approx(15.0)
    assert step_totals(None, sampled, 1.0, 1000) is sampled  # the runtime could not measure: the sampler's
    assert step_totals(None, None, 1.0, 1000) is None


def test_whole_run_is_both_steps_over_the_tasks_duration() -> None:
    setup = UsageSummary(
        cpu_seconds=3.0,
        cpu_user_seconds=2.0,
        cpu_system_seconds=1.0,
        memory_peak_bytes=400,
        oom_kills=0,
        source="cgroup",
        wall_seconds=6.0,
    )
    main = UsageSummary(
        cpu_seconds=1.0,
        cpu_user_seconds=1.0,
        memory_peak_bytes=200,
        gpu_percent=10.0,
        samples=2,
        source="cgroup",
        wall_seconds=2.0,
    )
    total = whole_run(setup, main, duration=10.0, cpus=2.0, memory_limit_bytes=800)
    assert total is not None
    assert (total.cpu_seconds, total.cpu_user_seconds, total.cpu_system_seconds) == (4.0, 3.0, 1.0)
    assert total.wall_seconds == 10.0
    assert total.cpu_percent == pytest.approx(4.0 / (10.0 * 2.0) * 100)
    assert total.memory_peak_bytes == 400 and total.memory_percent == pytest.approx(50.0)
    assert total.gpu_percent == 10.0 and total.samples == 2
    assert whole_run(None, None, 10.0, 1.0, 100) is None
    only_setup = whole_run(setup, None, 10.0, 1.0, 800)
    assert only_setup is not None and only_setup.cpu_seconds == 3.0


@needs_root
def test_process_step_cgroup_left_by_an_earlier_attempt_is_cleared_first(tmp_path, redis_client) -> None:  # type: ignore[no-untyped-def]
    runtime, settings = process_runtime(tmp_path)
    allowance = max(measured_run(runtime, settings, redis_client, make_job(NOTHING)).usage.cpu_seconds for _ in range(3))
    job = make_job(BURNERS["0.5 s"])
    # What a runner that died mid-step leaves: the step's cgroup, CPU time in it, a process still inside.
    leftover = task_cgroup.create(task_cgroup.leaf_name(settings.worker_id, job.spec.task_id, "main"))
    assert leftover is not None
    old = psutil.Popen(["python3", "-c", BURN + "burn(0.3)\nimport time\ntime.sleep(60)\n"])
    for path in leftover.procs_files:
        Path(path).write_text(str(old.pid))
    while old.cpu_times().user + old.cpu_times().system < 0.3:
        time.sleep(0.05)
    outcome = measured_run(runtime, settings, redis_client, job)
    assert old.wait(10) == -9  # killed with the earlier attempt's cgroup
    assert reference(outcome) <= outcome.usage.cpu_seconds <= reference(outcome) + allowance


def test_step_cgroup_names_of_one_worker_never_match_another_workers() -> None:
    assert task_cgroup.leaf_name("w", "t-1", "main").startswith(task_cgroup.leaf_prefix("w"))
    assert not task_cgroup.leaf_name("w-1", "t-1", "main").startswith(task_cgroup.leaf_prefix("w"))
    assert not task_cgroup.leaf_name("w", "1.t", "main").startswith(task_cgroup.leaf_prefix("w.1"))
    assert "/" not in task_cgroup.leaf_name("a/../b", "t", "setup")


@needs_root
def test_process_runtime_on_cgroup_v2(tmp_path, redis_client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Hiding this host's v1 mounts from task_cgroup stands in for a v2-only host;
    the cgroup made and read is a real one, in the host's real cgroup2 hierarchy
    (which has no controllers enabled: CPU counters only, as under a process's
    own cgroup on a v2 host)."""
    real_mounts = task_cgroup._mounts

    def v2_only():  # type: ignore[no-untyped-def]
        _, v2, mounts = real_mounts()
        return {}, v2, [m for m in mounts if m.fstype == "cgroup2"]

    monkeypatch.setattr(task_cgroup, "_mounts", v2_only)
    if v2_only()[1] is None:
        pytest.skip("this host has no cgroup2 mount")
    runtime, settings = process_runtime(tmp_path)
    allowance = max(measured_run(runtime, settings, redis_client, make_job(NOTHING)).usage.cpu_seconds for _ in range(3))
    outcome = measured_run(runtime, settings, redis_client, make_job(BURNERS["forked workers"]))
    usage = outcome.usage
    assert usage is not None and usage.source == "cgroup"
    assert reference(outcome) <= usage.cpu_seconds <= reference(outcome) + allowance
    assert usage.memory_peak_bytes > 0  # from the reaped rusage: this cgroup keeps no memory counters
