"""The usage sampler against real containers, real cgroups and real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from hivemind_celery.runtime.docker_stats import DockerStatsSource, source_for
from hivemind_celery.usage import gpu, task_cgroup
from hivemind_celery.usage.cgroup import (
    CgroupPaths,
    CgroupReader,
    find_cgroup,
    parse_mountinfo,
    parse_proc_cgroup,
)
from hivemind_celery.usage.sampler import (
    CgroupSource,
    ProcessSource,
    UsageSample,
    UsageSampler,
)

MiB = 1024 * 1024
BUSYBOX_IMAGE = os.environ.get("HIVEMIND_BUSYBOX_IMAGE", "hivemind-busybox:latest")
PYTHON_IMAGE = os.environ.get("HIVEMIND_TASK_IMAGE", "hivemind-task-python:bookworm")

MOUNTINFO_V1 = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 /outer /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/my\\040pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_parse_mountinfo_and_proc_cgroup() -> None:
    mounts = {m.point: m for m in parse_mountinfo(MOUNTINFO_V1)}
    assert mounts["/sys/fs/cgroup/cpu,cpuacct"].options >= {"cpu", "cpuacct"}
    assert mounts["/sys/fs/cgroup/memory"].root == "/outer"
    assert "/sys/fs/cgroup/my pids" in mounts  # \040 is a space
    assert mounts["/sys/fs/cgroup/unified"].fstype == "cgroup2"
    v1, unified = parse_proc_cgroup("4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n0::/docker/abc\n")
    assert v1 == {"memory": "/docker/abc", "cpu": "/docker/abc", "cpuacct": "/docker/abc"}
    assert unified == "/docker/abc"


def test_find_cgroup_of_this_process() -> None:
    # Our own cgroup exists on every Linux host; this one is v1 (a hybrid).
    paths = find_cgroup(os.getpid())
    assert paths is not None
    counters = CgroupReader(paths).read()
    assert counters.cpu_seconds > 0
    assert counters.memory_bytes > 0


def test_find_cgroup_of_missing_process_is_none() -> None:
    assert find_cgroup(2**22 + 12345) is None


def test_cgroup_v2_files(tmp_path: Path) -> None:
    # This host's kernel runs cgroup v1, so a v2 directory cannot exist here:
    # the v2 file formats are written by hand, as the kernel documents them.
    (tmp_path / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n")
    (tmp_path / "memory.current").write_text("1048576\n")
    (tmp_path / "memory.peak").write_text("4194304\n")
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (tmp_path / "pids.current").write_text("7\n")
    counters = CgroupReader(CgroupPaths(2, tmp_path, tmp_path, tmp_path)).read()
    assert (counters.cpu_seconds, counters.cpu_user_seconds, counters.cpu_system_seconds) == (2.5, 2.0, 0.5)
    assert (counters.memory_bytes, counters.memory_peak_bytes) == (1 << 20, 4 << 20)
    assert (counters.pids, counters.oom_kills) == (7, 1)
    (tmp_path / "memory.peak").unlink()  # kernels before 5.19 keep no peak
    assert CgroupReader(CgroupPaths(2, tmp_path, tmp_path, tmp_path)).read().memory_peak_bytes is None


def test_no_gpu_means_nothing() -> None:
    # No GPU on this machine: NVML (installed or not) must give nothing, not fail.
    assert gpu.list_gpus() == []
    assert gpu.process_usage({1, 2, 3}) == (0.0, 0)


def _run(docker_client, image: str, command: list[str], **kwargs):
    return docker_client.containers.run(
        image,
        command,
        detach=True,
        user="1000:1000",
        network_mode="none",
        labels={"hivemind.test": "sampler"},
        **kwargs,
    )


def _pid(container) -> int:
    container.reload()
    return int(container.attrs["State"]["Pid"])


@pytest.mark.docker
def test_cpu_burner_under_half_a_core(docker_client) -> None:
    container = _run(
        docker_client, BUSYBOX_IMAGE, ["sh", "-c", "timeout 3 yes > /dev/null; sleep 1"], nano_cpus=500_000_000, mem_limit="64m"
    )
    samples: list[UsageSample] = []
    try:
        source = source_for(_pid(container), container.id, docker_client)
        assert isinstance(source, CgroupSource)
        sampler = UsageSampler(
            source, "burner", cpus_reserved=0.5, memory_limit_bytes=64 * MiB, interval=0.5, on_sample=samples.append
        ).start()
        # Docker's stats API reads the same cgroup: it must agree with ours.
        before = source.read().cpu_seconds
        docker_view = DockerStatsSource(container).read().cpu_seconds
        after = source.read().cpu_seconds
        assert before <= docker_view <= after
        container.wait(timeout=30)
        summary = sampler.stop()
    finally:
        container.remove(force=True)
    assert summary.source == "cgroup"
    # `yes` was busy for 3 s under a 0.5-core quota: at most 0.5 x 3 s of CPU
    # (plus scheduler slack); the shared 2-core test machine may give it less.
    assert 0.3 <= summary.cpu_seconds <= 0.5 * 3 * 1.2
    assert summary.cpu_user_seconds + summary.cpu_system_seconds == pytest.approx(summary.cpu_seconds, abs=0.3)
    assert 0 < summary.cpu_percent <= 100
    busy = [s.cpu_percent for s in samples[1:] if s.elapsed_s < 2.5]
    assert busy, samples
    assert all(0 <= p <= 100 for p in busy)  # capped at the quota, never above it
    assert max(busy) >= 40  # the burner used a good share of its half core
    assert summary.samples >= len(samples) >= 3
    assert [s.task_id for s in samples] == ["burner"] * len(samples)


@pytest.mark.docker
def test_memory_peak_of_80_mb(docker_client) -> None:
    script = "b = bytearray(80 * 2**20); import time; time.sleep(1.5)"
    container = _run(docker_client, PYTHON_IMAGE, ["python3", "-c", script], mem_limit="256m", memswap_limit="256m")
    try:
        sampler = UsageSampler(source_for(_pid(container), container.id), "mem", 1.0, 256 * MiB, interval=0.5).start()
        container.wait(timeout=30)
        summary = sampler.stop()
    finally:
        container.remove(force=True)
    assert summary.memory_peak_bytes >= 80 * MiB
    assert summary.memory_percent == pytest.approx(summary.memory_peak_bytes / (256 * MiB) * 100)
    assert summary.pids_peak >= 1


@pytest.mark.docker
def test_oom_kill_is_counted(docker_client) -> None:
    # The child is killed, the shell lives on, so the cgroup still exists to read.
    script = "python3 -c 'bytearray(200 * 2**20)'; sleep 2"
    container = _run(docker_client, PYTHON_IMAGE, ["sh", "-c", script], mem_limit="48m", memswap_limit="48m")
    try:
        sampler = UsageSampler(source_for(_pid(container), container.id), "oom", 1.0, 48 * MiB, interval=0.5).start()
        container.wait(timeout=30)
        summary = sampler.stop()
    finally:
        container.remove(force=True)
    assert summary.oom_kills >= 1
    assert summary.memory_percent > 50


@pytest.mark.docker
def test_docker_stats_fallback_and_vanished_container(docker_client) -> None:
    container = _run(docker_client, BUSYBOX_IMAGE, ["sleep", "30"])
    try:
        # A PID we cannot see (as from inside another PID namespace): Docker's API.
        source = source_for(-1, container.id, docker_client)
        assert isinstance(source, DockerStatsSource)
        assert source.read().pids >= 1
    finally:
        container.remove(force=True)
    assert source_for(-1, container.id, docker_client) is None
    # Sampling a removed container ends quietly with what was measured.
    sampler = UsageSampler(source, "gone", 1.0, 64 * MiB, interval=0.2).start()
    assert sampler.stop().samples == 0


def test_process_source_measures_a_process_tree() -> None:
    code = (
        "import subprocess,sys; subprocess.run([sys.executable,'-c',"
        "'import time\\nt=time.process_time()\\nwhile time.process_time()-t<0.6: pass'])"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        source = source_for(proc.pid)
        assert isinstance(source, ProcessSource)
        sampler = UsageSampler(source, "proc", 1.0, 512 * MiB, interval=0.1).start()
        # Read while the tree lives: the child's CPU shows under the parent.
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        summary = sampler.stop()
    finally:
        proc.kill()
        proc.wait()
    assert summary.source == "process"
    assert summary.samples >= 2
    assert summary.memory_peak_bytes > 0
    assert summary.cpu_seconds >= 0.1  # the last reads happen while the child burns CPU


def test_slow_source_is_opened_on_the_sampler_thread() -> None:
    # start() must not wait for a slow source (Docker's stats API, a Docker client):
    # the opener blocks until start() has returned, which only works if it runs elsewhere.
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    returned = threading.Event()
    opened_on: list[str] = []
    published: list[UsageSample] = []

    def open_source():
        assert returned.wait(10), "start() did not return while the source was being opened"
        opened_on.append(threading.current_thread().name)
        return ProcessSource(proc.pid)

    try:
        sampler = UsageSampler(None, "slow", 1.0, 512 * MiB, interval=0.1, on_sample=published.append, open_source=open_source)
        sampler.start()
        returned.set()
        deadline = time.monotonic() + 10
        while not published and time.monotonic() < deadline:
            time.sleep(0.05)
        summary = sampler.stop()
    finally:
        proc.kill()
        proc.wait()
    assert opened_on == ["usage-slow"]
    assert published and published[0].task_id == "slow" and published[0].source == "process"
    assert summary.source == "process" and summary.samples >= 1 and summary.memory_peak_bytes > 0


def test_no_source_at_all_publishes_nothing() -> None:
    published: list[UsageSample] = []
    sampler = UsageSampler(
        None, "none", 1.0, 64 * MiB, interval=0.1, on_sample=published.append, open_source=lambda: None
    ).start()
    summary = sampler.stop()
    assert published == []
    assert summary.source == "none" and summary.samples == 0 and summary.cpu_seconds == 0


@pytest.mark.docker
def test_gpu_task_on_a_host_without_gpu_measures_cpu_and_zero_gpu(docker_client) -> None:
    # No GPU (and here no NVML package) on this machine: a task that asked for a GPU is
    # still measured, with GPU fields 0, and a worker serving the gpu queue offers no GPU.
    from hivemind_celery.core.settings import Settings
    from hivemind_celery.site.heartbeat import local_capacity

    offer = local_capacity(Settings(), "w", "w@host", ["gpu", "cpu"])
    assert (offer.gpus, offer.gpu_memory_mb, offer.gpu_names) == (0, 0, [])
    container = _run(
        docker_client, BUSYBOX_IMAGE, ["sh", "-c", "timeout 2 yes > /dev/null; sleep 1"], nano_cpus=1_000_000_000, mem_limit="64m"
    )
    samples: list[UsageSample] = []
    try:
        source = source_for(_pid(container), container.id, with_gpu=True)
        assert isinstance(source, CgroupSource) and source.with_gpu and not source.cheap
        sampler = UsageSampler(source, "gpu-none", 1.0, 64 * MiB, interval=0.3, on_sample=samples.append).start()
        container.wait(timeout=30)
        summary = sampler.stop()
    finally:
        container.remove(force=True)
    assert samples and all(s.gpu_percent == 0.0 and s.gpu_memory_bytes == 0 for s in samples)
    assert summary.cpu_seconds > 0.2
    assert (summary.gpu_percent, summary.gpu_memory_peak_bytes) == (0.0, 0)


class CountedReads:
    """A real source whose reads are counted (the test's only addition)."""

    def __init__(self, source) -> None:  # type: ignore[no-untyped-def]
        self.source, self.reads = source, 0
        self.name, self.cheap, self.outlives = source.name, source.cheap, source.outlives

    def read(self):  # type: ignore[no-untyped-def]
        self.reads += 1
        return self.source.read()


@pytest.mark.docker
@pytest.mark.skipif(os.geteuid() != 0, reason="reading and removing a step's cgroup needs root")
def test_a_cgroup_of_the_steps_own_is_read_only_to_publish_and_exactly_at_the_end(docker_client) -> None:
    # The Docker runtime runs each step under a cgroup of its own (task_cgroup.docker_parent),
    # which keeps its totals after Docker removes the container's: reading it four times
    # a second only to bound a loss that cannot happen would cost the lender CPU for nothing.
    parent = task_cgroup.docker_parent("sampler-outlives", uuid.uuid4().hex[:8], "main")
    container = _run(
        docker_client, BUSYBOX_IMAGE, ["sh", "-c", "timeout 2 yes > /dev/null; true"], cgroup_parent=parent, mem_limit="64m"
    )
    cgroup = task_cgroup.locate(parent)
    try:
        assert cgroup is not None, "dockerd did not make the step's cgroup where this host shows it"
        found = source_for(_pid(container), container.id, docker_client, cgroup=cgroup.paths)
        assert isinstance(found, CgroupSource) and found.outlives
        source = CountedReads(found)
        samples: list[UsageSample] = []
        sampler = UsageSampler(
            source, "outlives", cpus_reserved=1.0, memory_limit_bytes=64 * MiB, interval=0.5, on_sample=samples.append
        ).start()
        container.wait(timeout=30)
        time.sleep(0.5)  # the container's own cgroup is gone by now; the step's is not
        summary = sampler.stop()
        reads_at_stop = source.reads
        again = sampler.stop()  # the meter asks twice (its finally, then the outcome's totals)
        after_exit = CgroupReader(cgroup.paths).read().cpu_seconds
    finally:
        container.remove(force=True)
        if cgroup is not None:
            cgroup.remove()
    # One read at start, one per publication, the one that finds the step's processes
    # gone, one at stop; a container's own cgroup would have been read every 0.25 s
    # (twice per publication here).
    assert source.reads <= len(samples) + 3, (source.reads, len(samples))
    assert again == summary and source.reads == reads_at_stop  # a later stop reads nothing more
    assert summary.cpu_seconds == pytest.approx(after_exit, abs=1e-6)  # nothing lost to sampling
    assert summary.cpu_seconds > 0.2
