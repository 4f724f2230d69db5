"""The scenarios a 2-slot site must pass on either Node Pool (tests/pool_sites.py):
every free slot used, capacity right across a bridge restart, a heartbeat that
never fails. What ran when is read from the tasks' execution reports (when the
job ran on the worker), never from how long a step took."""

from __future__ import annotations

import time

from tests.pool_sites import SLOTS, PoolSite, sleeper_zip

TASK_SECONDS = 6  # longer than a stand-in round and a container start: a second slot's task overlaps
HEARTBEAT_SPAN_S = 120.0
MAX_GAP_BEATS = 5  # the failing heartbeat was heard every ~30 s; a working one every interval


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return max(a[0], b[0]) < min(a[1], b[1])


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = best = 0
    for _, step in events:
        running += step
        best = max(best, running)
    return best


def run_batch(site: PoolSite, count: int, tag: str) -> list[tuple[float, float]]:
    """Upload `count` tasks together; wait for all; their run intervals in upload order."""
    ids = [site.upload(sleeper_zip(TASK_SECONDS, f"{tag}-{n}")) for n in range(count)]
    final = site.wait_final(ids)
    assert all(final[t].status == "COMPLETED" for t in ids), {t: (final[t].status, final[t].message) for t in ids}
    return [site.run_interval(t) for t in ids]


def first_task_alone(site: PoolSite) -> None:
    [only] = run_batch(site, 1, "alone")
    assert only[1] > only[0]


def two_together_run_at_once(site: PoolSite, tag: str = "pair") -> None:
    first, second = run_batch(site, 2, tag)
    assert overlap(first, second), f"the two tasks ran one after the other: {first} then {second}"


def ten_tasks_keep_both_slots_busy(site: PoolSite) -> list[tuple[float, float]]:
    """Every task but the last to start ran alongside another one (a site offered
    one slot runs them strictly one after the other), and never more than two at once."""
    intervals = sorted(run_batch(site, 10, "ten"))
    assert most_at_once(intervals) == SLOTS
    alone = [
        n for n, task in enumerate(intervals[:-1]) if not any(overlap(task, other) for m, other in enumerate(intervals) if m != n)
    ]
    assert alone == [], f"tasks {alone} (by start) ran with the other slot empty: {intervals}"
    return intervals


def restart_keeps_capacity(site: PoolSite) -> list[str]:
    """The bridge restarted while both slots run: both tasks finish, and two more run
    together afterwards (the pool still offers both slots)."""
    ids = [site.upload(sleeper_zip(TASK_SECONDS + 4, f"restart-{n}")) for n in range(2)]
    site.wait_running(ids)
    site.restart_bridge()
    final = site.wait_final(ids)
    assert all(final[t].status == "COMPLETED" for t in ids), {t: final[t].message for t in ids}
    two_together_run_at_once(site, "after-restart")
    return ids


def heartbeat_never_failed(site: PoolSite) -> None:
    """Over at least two minutes of the bridge running: no heartbeat failure in its log,
    and the pool heard the node every few heartbeat intervals (restarts aside)."""
    left = site.bridge_started_at + HEARTBEAT_SPAN_S - time.time()
    if left > 0:
        time.sleep(left)  # the span the issue asks for; the scenarios before took part of it
    warnings = site.bridge_warnings()
    assert not [w for w in warnings if "heartbeat" in w or "node usage" in w], warnings
    heard = [t for t in site.node_heard_times() if t >= site.bridge_started_at]
    assert heard and heard[-1] - heard[0] >= HEARTBEAT_SPAN_S - 5 * site.heartbeat_interval
    gaps = [(a, b) for a, b in zip(heard, heard[1:]) if not any(a <= up and b >= down for down, up in site.bridge_restarts)]
    widest = max(b - a for a, b in gaps)
    assert widest <= MAX_GAP_BEATS * site.heartbeat_interval, (
        f"the pool went {widest:.1f} s without hearing the node (heartbeat every {site.heartbeat_interval} s)"
    )
