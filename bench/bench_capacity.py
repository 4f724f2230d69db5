"""Site capacity with 10,000 registered workers: the registry's maintained
totals vs listing workers with KEYS and summing them (the seed's design).

One run, one Redis database: 10,000 workers are registered through the
registry, then `Registry.capacity()` (one Lua call: reap the expired, read the
totals) is timed against the baseline, `KEYS hm:worker:*:info` followed by a
pipelined HGETALL of every worker and a sum in Python (already kinder than
one round trip per worker). Goal: ours at most 1 ms.

Needs a Redis (HIVEMIND_TEST_REDIS, default redis://localhost:6379; database 61
is flushed): `make bench` provides it.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from hivemind_celery.core import keys  # noqa: E402
from hivemind_celery.site.registry import Registry, WorkerCapacity  # noqa: E402

WORKERS = int(os.environ.get("BENCH_WORKERS", "10000"))
OURS_ROUNDS = int(os.environ.get("BENCH_CAPACITY_ROUNDS", "500"))
KEYS_ROUNDS = int(os.environ.get("BENCH_KEYS_ROUNDS", "10"))


def keys_and_sum(client: redis.Redis) -> tuple[int, float, int]:
    names = client.keys(keys.worker_info("*"))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(name)
    cpus = memory = 0
    for info in pipe.execute():
        cpus += int(info.get(b"cpus_milli", 0))
        memory += int(info.get(b"memory_mb", 0))
    return len(names), cpus / 1000, memory


def median_time(call, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    url = os.environ.get("HIVEMIND_TEST_REDIS", "redis://localhost:6379") + "/61"
    client = redis.Redis.from_url(url)
    client.flushdb()
    registry = Registry(client)
    fleet = [
        WorkerCapacity(f"w{i:05d}", f"host{i}", cpus=1 + i % 8, memory_mb=2048 * (1 + i % 4), queues=["cpu"])
        for i in range(WORKERS)
    ]
    for start in range(0, WORKERS, 1000):
        registry.register_many(fleet[start : start + 1000], ttl=3600)
    cap = registry.capacity()
    count, cpus, memory = keys_and_sum(client)
    assert (
        (cap.workers, cap.cpus_total, cap.memory_mb_total)
        == (count, cpus, memory)
        == (WORKERS, sum(w.cpus for w in fleet), sum(w.memory_mb for w in fleet))
    ), "the two ways disagree"
    ours = median_time(registry.capacity, OURS_ROUNDS)
    baseline = median_time(lambda: keys_and_sum(client), KEYS_ROUNDS)
    client.flushdb()
    ratio = baseline / ours
    print(f"Registry.capacity(): median {ours * 1e3:.3f} ms over {OURS_ROUNDS} reads")
    print(f"KEYS + HGETALL + sum: median {baseline * 1e3:.1f} ms over {KEYS_ROUNDS} reads")
    print(f"ratio: {ratio:.0f}x")
    body = (
        f"{WORKERS:,} workers registered in one Redis database; both ways return the same totals.\n\n"
        f"| capacity read | median | ratio |\n|---|---|---|\n"
        f"| `Registry.capacity()` (Lua: reap expired, read totals) | {ours * 1e3:.3f} ms ({OURS_ROUNDS} reads) | 1 |\n"
        f"| `KEYS hm:worker:*:info` + pipelined HGETALL + sum | {baseline * 1e3:.1f} ms ({KEYS_ROUNDS} reads) "
        f"| {ratio:.0f}× slower |\n\n"
        f"Goal: ours ≤ 1 ms. {'Met' if ours <= 0.001 else 'Not met'} ({ours * 1e3:.3f} ms). "
        f"Times include the client round trip over loopback.\n"
    )
    write_section(
        "capacity",
        "Site capacity with 10,000 workers: maintained totals vs KEYS and sum",
        "make bench (or: .venv/bin/python bench/bench_capacity.py)",
        body,
    )


if __name__ == "__main__":
    main()
