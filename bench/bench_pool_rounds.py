"""Slot use on a 2-slot site: the stand-in for the deployed Node Pool (dispatch
rounds every 10 s, BUSY after every dispatch) against our own Node Pool
(event-driven dispatch), in one run.

Each side: a real `celery worker -c 2` offering 2 CPUs, the real bridge
(`python -m bridge`) on its shipped timers, and a pool; TASKS tasks of
TASK_SECONDS seconds (`time.sleep` in hivemind-task-python, one core each) are
uploaded together. Measured: the share of slot-time busy while tasks were
pending, i.e. between the first upload and the last task's dispatch, with
"busy" = a task's job running on the worker (from its execution report).
Ratio = the stand-in's share / our pool's share.

Where the idle slot-time goes (the window is sampled every 50 ms; an idle slot
is one the site had free with no job running in it):
- dispatch to job start: a task was sent for it and had not started yet (the
  bridge's intake, Celery, the container start): the site's;
- (stand-in) the last round found the slot free, had pending work and sent
  nothing to the node (not Idle in the pool, or its available_* short): ours;
- (stand-in) the last round sent the node one task and left this slot idle:
  the pool's one task per node per round (BUSY after a dispatch);
- (stand-in) the slot freed after the last round: the pool's round wait;
- (our pool) a job's end to the next dispatch (the room announced, the pool's
  wake and round).
Needs dockerd, the task image and a Redis (HIVEMIND_TEST_REDIS); uses
databases 53 and 54 and empties them.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from hivemind_celery.celery_app import create_app  # noqa: E402
from hivemind_celery.core.settings import Settings  # noqa: E402
from tests.pool_sites import SLOTS, OwnPoolSite, PoolSite, StandInSite, sleeper_zip  # noqa: E402
from tests.services_kit import PYTHON_IMAGE, WorkerProcess  # noqa: E402

TASKS = int(os.environ.get("BENCH_TASKS", "20"))
TASK_SECONDS = float(os.environ.get("BENCH_TASK_SECONDS", "10"))
ROUND_S = float(os.environ.get("BENCH_ROUND_S", "10"))
DBS = {"standin": 53, "own": 54}
STEP = 0.05
COMMAND = "scripts/with-services.sh .venv/bin/python bench/bench_pool_rounds.py"


@dataclass
class Side:
    name: str
    uploaded_at: float = 0.0
    dispatched: dict[str, float] = field(default_factory=dict)  # task -> the pool's RUNNING time
    runs: dict[str, tuple[float, float]] = field(default_factory=dict)  # task -> job start, end
    rounds: list = field(default_factory=list)  # the stand-in's round log
    idle: dict[str, float] = field(default_factory=dict)  # category -> idle slot-seconds

    @property
    def window(self) -> tuple[float, float]:
        return self.uploaded_at, max(self.dispatched.values())

    @property
    def slot_seconds(self) -> float:
        start, end = self.window
        return SLOTS * (end - start)

    @property
    def busy_seconds(self) -> float:
        start, end = self.window
        return sum(max(0.0, min(b, end) - max(a, start)) for a, b in self.runs.values())

    @property
    def share(self) -> float:
        return self.busy_seconds / self.slot_seconds


def run_side(site: PoolSite, side: Side, redis_url: str, tmp: Path) -> None:
    app = create_app(Settings(redis_url=redis_url))
    worker = WorkerProcess(
        redis_url,
        "cpu",
        tmp / f"worker-{side.name}.log",
        concurrency=SLOTS,
        worker_id=f"bench-rounds-{side.name}",
        HIVEMIND_CAPACITY_CPUS=str(SLOTS),
    )
    try:
        worker.wait_ready(app)
        site.start()
        side.uploaded_at = time.time()
        ids = [site.upload(sleeper_zip(TASK_SECONDS, f"{side.name}-{n}")) for n in range(TASKS)]
        final = site.wait_final(ids, timeout=TASKS * (TASK_SECONDS + ROUND_S) * 2 + 120)
        bad = {t: (final[t].status, final[t].message) for t in ids if final[t].status != "COMPLETED"}
        if bad:
            raise SystemExit(f"{side.name}: tasks did not complete: {bad}")
        side.runs = {t: site.run_interval(t) for t in ids}
        if isinstance(site, StandInSite):
            with site.double.lock:
                side.dispatched = {t: site.double.tasks[t].running_at for t in ids}
                side.rounds = list(site.double.rounds)
        else:
            assert isinstance(site, OwnPoolSite)
            side.dispatched = {t: site.site.row("SELECT started_at FROM tasks WHERE task_id = ?", t)["started_at"] for t in ids}
    finally:
        site.stop()
        worker.stop()
        app.close()


def attribute(side: Side) -> None:
    """Split the idle slot-time of the pending window into the categories above."""
    start, end = side.window
    runs = list(side.runs.items())
    rounds = [r for r in side.rounds if start <= r.at <= end]
    round_times = [r.at for r in rounds]

    def running(t: float) -> int:
        return sum(1 for _, (a, b) in runs if a <= t < b)

    def in_transit(t: float) -> int:
        return sum(1 for task, (a, _) in runs if side.dispatched[task] <= t < a)

    idle = dict.fromkeys(
        (
            "dispatch to job start",
            "round found a free slot, sent the node nothing (ours)",
            "one task per node per round (the pool's)",
            "waiting for the next round (the pool's)",
            "job end to the next dispatch",
        ),
        0.0,
    )
    t = start
    while t < end:
        free = SLOTS - running(t)
        transit = min(free, in_transit(t))
        idle["dispatch to job start"] += transit * STEP
        left = free - transit
        if left > 0:
            if not side.rounds:
                idle["job end to the next dispatch"] += left * STEP
            else:
                index = bisect_right(round_times, t) - 1
                last = rounds[index] if index >= 0 else None
                if last is not None and last.pending > 0:
                    free_then = SLOTS - running(last.at) - in_transit(last.at)
                    missed = min(left, max(0, free_then - len(last.sent)))
                else:
                    missed = 0
                key = (
                    "one task per node per round (the pool's)"
                    if last is not None and last.sent
                    else "round found a free slot, sent the node nothing (ours)"
                )
                idle[key] += missed * STEP
                idle["waiting for the next round (the pool's)"] += (left - missed) * STEP
        t += STEP
    side.idle = {name: seconds for name, seconds in idle.items() if seconds > 0 or side.rounds}


def main() -> None:
    base = os.environ.get("HIVEMIND_TEST_REDIS", "redis://localhost:6379")
    tmp = Path(tempfile.mkdtemp(prefix="bench-rounds-"))
    sides = {"standin": Side("standin"), "own": Side("own")}
    for name, side in sides.items():
        url = f"{base}/{DBS[name]}"
        redis.Redis.from_url(url).flushdb()
        (tmp / name).mkdir(parents=True, exist_ok=True)
        try:
            site: PoolSite = (
                StandInSite(
                    tmp / name, url, round_s=ROUND_S, heartbeat_interval=None, registration_interval=None, relay_interval=None
                )
                if name == "standin"
                else OwnPoolSite(
                    tmp / name,
                    url,
                    test_intervals=False,
                    heartbeat_interval=None,
                    registration_interval=None,
                    relay_interval=None,
                )
            )
            run_side(site, side, url, tmp)
        finally:
            redis.Redis.from_url(url).flushdb()
        attribute(side)

    standin, own = sides["standin"], sides["own"]
    ratio = standin.share / own.share
    rows = "".join(
        f"| {label} | {s.window[1] - s.window[0]:.1f} s | {s.busy_seconds:.1f} of {s.slot_seconds:.1f} slot-s "
        f"| {s.share:.2f} | {s.share / own.share:.2f} |\n"
        for label, s in (
            ("our Node Pool (event-driven dispatch)", own),
            (f"stand-in for the deployed pool ({ROUND_S:g}-s rounds)", standin),
        )
    )

    def cell(side: Side, name: str) -> str:
        seconds = side.idle.get(name, 0.0)
        return f"{seconds:.1f} s ({100 * seconds / side.slot_seconds:.0f} %)"

    idle_rows = "".join(
        f"| {name} | {cell(standin, name)} | {cell(own, name)} |\n" for name in dict.fromkeys([*standin.idle, *own.idle])
    )
    body = f"""\
{TASKS} tasks of {TASK_SECONDS:g} s (`time.sleep` in `{PYTHON_IMAGE}`, one core each) uploaded
together to a 2-slot site (`celery worker -c {SLOTS}` offering {SLOTS} CPUs, the bridge on its shipped
timers: heartbeat 5 s, registration 30 s). Busy share = the worker running the task (the runtime's start,
container creation included, to its end: each task's execution report) / slot-time, between the
first upload and the last task's dispatch (while tasks were pending).

| pool | pending window | busy | busy share | ratio |
|---|---|---|---|---|
{rows}
Where the idle slot-time of the pending window goes (share of that side's slot-time):

| idle slot, because | stand-in | our pool |
|---|---|---|
{idle_rows}
The stand-in's round wait and its one task per node per round (it marks the node `BUSY` after
every dispatch until the next `Idle` report) are the deployed pool's; dispatch to job start is
the site's own path (intake, Celery, container start); a round that found a free slot and
pending work but sent the node nothing would be ours (the bridge not saying `Idle`, or the
pool's `available_*` short of the site's room). Ratio {ratio:.2f}: on the deployed pool's
timing a 2-slot site keeps this share of what the same site keeps on our pool.
"""
    print(body)
    if os.environ.get("BENCH_DRY") == "1":  # a trial with other figures: print only
        return
    write_section("pool-rounds", "Slot use: the deployed pool's rounds vs our Node Pool", COMMAND, body)


if __name__ == "__main__":
    main()
