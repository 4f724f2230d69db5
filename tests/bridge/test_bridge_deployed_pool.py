"""The real bridge (`python -m bridge`), a real `celery worker -c 2` and dockerd,
joined to a stand-in for the deployed HiveMind Node Pool.

The deployed pool cannot be installed here: tests/deployed_pool_double.py stands
in for it, written from the facts in NODEPOOL-PROTOCOL.md (node id in the
node-level TaskUsage token, available_* kept across registrations and clamped,
BUSY after a dispatch until an Idle report, dispatch rounds on a timer — 1 s
here, ~10 s deployed — COMPLETED on every result, silent refusals, no secret
sent). One module-scoped site runs every scenario; the heartbeat check comes
last and covers the whole run (at least two minutes).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import pool_scenarios as scenarios
from tests.e2e_kit import SITE
from tests.nodepool_kit import wait_for
from tests.pool_sites import CPU_SCORE, SLOTS, StandInSite

pytestmark = [pytest.mark.docker, pytest.mark.redis]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, redis_url: str, start_worker) -> Iterator[StandInSite]:  # noqa: ANN001
    start_worker("cpu", concurrency=SLOTS, HIVEMIND_CAPACITY_CPUS=str(SLOTS), HIVEMIND_SAMPLE_INTERVAL="0.5")
    running = StandInSite(tmp_path_factory.mktemp("standin"), redis_url, round_s=1.0)
    running.start()
    yield running
    running.stop()


def test_a_first_task_runs_alone(site: StandInSite) -> None:
    scenarios.first_task_alone(site)


def test_two_tasks_uploaded_together_run_at_the_same_time(site: StandInSite) -> None:
    scenarios.two_together_run_at_once(site)


def test_ten_tasks_keep_both_slots_busy(site: StandInSite) -> None:
    since = len(site.double.rounds)
    intervals = scenarios.ten_tasks_keep_both_slots_busy(site)
    # The pool's own books agree with the site at every round: available_* is the
    # total less what runs there (a site that registered what was free would have
    # clamped it lower), and it never had to take back a refused dispatch.
    with site.double.lock:
        rounds = site.double.rounds[since:]
        tasks = [t for t in site.double.tasks.values() if t.node_id == SITE]
        refusals = [r for r in site.double.refusals if r[0] >= rounds[0].at]
    assert refusals == [], refusals
    for round_ in rounds:
        running = sum(
            1
            for t in tasks
            if t.running_at is not None and t.running_at <= round_.at and (t.result_at is None or t.result_at > round_.at)
        )
        assert round_.nodes[SITE][1]["cpu_score"] == (SLOTS - running) * CPU_SCORE, (round_, running)
    assert len(intervals) == 10


def test_a_bridge_restart_keeps_capacity_right(site: StandInSite) -> None:
    scenarios.restart_keeps_capacity(site)
    node = site.double.node(SITE)
    wait_for(
        lambda: node.available == node.total,
        timeout=30,
        what=f"available_* back to the totals ({node.available} vs {node.total})",
    )
    with site.double.lock:
        registered = {(r.cpu_score, r.memory_gb, r.cpu_cores) for _, r in site.double.registrations}
    assert len(registered) == 1 and next(iter(registered))[0] == SLOTS * CPU_SCORE, registered


def test_the_heartbeat_never_failed_over_two_minutes(site: StandInSite) -> None:
    scenarios.heartbeat_never_failed(site)
    with site.double.lock:
        usage, registrations = list(site.double.node_usage), len(site.double.registrations)
        reports = len(site.double.report_times(SITE))
    assert usage and all(ok for _, ok, _ in usage), [m for _, ok, m in usage if not ok][:3]
    # Registrations are the liveness refresh (every 5 s here), not one per beat.
    assert registrations < reports / 2, (registrations, reports)
