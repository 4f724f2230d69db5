"""One usage sample from the cgroup files vs Docker's stats API.

Both read the same running container (a `yes` CPU burner under half a core)
in one run: the sampler's cgroup read (what every sample costs a worker) and
`container.stats(stream=False)` (the API the seed's monitor used). The ratio
of their medians is the figure; the goal is a cgroup read at least 1000x
cheaper.

Needs dockerd and the busybox image: `make bench` provides them.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import docker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from hivemind_celery.runtime.docker_stats import DockerStatsSource, source_for  # noqa: E402
from hivemind_celery.usage.sampler import CgroupSource  # noqa: E402

BUSYBOX_IMAGE = os.environ.get("HIVEMIND_BUSYBOX_IMAGE", "hivemind-busybox:latest")
CGROUP_READS = int(os.environ.get("BENCH_CGROUP_READS", "2000"))
STATS_CALLS = int(os.environ.get("BENCH_STATS_CALLS", "5"))


def timed(call, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    client = docker.from_env()
    container = client.containers.run(
        BUSYBOX_IMAGE,
        ["sh", "-c", "yes > /dev/null"],
        detach=True,
        nano_cpus=500_000_000,
        network_mode="none",
        labels={"hivemind.bench": "sampler"},
    )
    try:
        container.reload()
        source = source_for(int(container.attrs["State"]["Pid"]), container.id, client)
        if not isinstance(source, CgroupSource):
            raise SystemExit("the container's cgroup is not visible from here; nothing to compare")
        stats = DockerStatsSource(container)
        cgroup_times = timed(source.read, CGROUP_READS)
        stats_times = timed(stats.read, STATS_CALLS)
        # Both saw the same counters: a sanity check that they measure one thing.
        ours, theirs = source.read().cpu_seconds, stats.read().cpu_seconds
    finally:
        container.remove(force=True)
    cgroup_median = statistics.median(cgroup_times)
    stats_median = statistics.median(stats_times)
    ratio = stats_median / cgroup_median
    print(f"cgroup read: median {cgroup_median * 1e6:.1f} us over {CGROUP_READS} reads")
    print(f"docker stats(stream=False): median {stats_median * 1e3:.0f} ms over {STATS_CALLS} calls")
    print(f"ratio: {ratio:.0f}x  (cpu seconds seen: cgroup {ours:.3f}, docker {theirs:.3f})")
    body = (
        f"The same running container (`yes` under a 0.5-core quota), one run.\n\n"
        f"| read | median | ratio |\n|---|---|---|\n"
        f"| cgroup files (`CgroupSource.read`: cpuacct, memory, pids) | {cgroup_median * 1e6:.1f} µs "
        f"({CGROUP_READS} reads) | 1 |\n"
        f"| `container.stats(stream=False)` | {stats_median * 1e3:.0f} ms ({STATS_CALLS} calls) | "
        f"{ratio:.0f}× slower |\n\n"
        f"Goal: cgroup read ≥ 1000× cheaper. {'Met' if ratio >= 1000 else 'Not met'} ({ratio:.0f}×).\n"
    )
    write_section(
        "sampler",
        "One usage sample: cgroup files vs Docker stats API",
        "make bench (or: .venv/bin/python bench/bench_sampler.py)",
        body,
    )


if __name__ == "__main__":
    main()
