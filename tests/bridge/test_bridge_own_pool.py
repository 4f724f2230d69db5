"""The same scenarios as test_bridge_deployed_pool.py, against this project's own
Node Pool (`python -m nodepool`, event-driven dispatch): the real bridge, a real
`celery worker -c 2` and dockerd. One module-scoped site runs every scenario;
the heartbeat check comes last and covers the whole run (at least two minutes).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import pool_scenarios as scenarios
from tests.e2e_kit import SITE
from tests.nodepool_kit import wait_for
from tests.pool_sites import CPU_SCORE, SLOTS, OwnPoolSite

pytestmark = [pytest.mark.docker, pytest.mark.redis]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, redis_url: str, start_worker) -> Iterator[OwnPoolSite]:  # noqa: ANN001
    start_worker("cpu", concurrency=SLOTS, HIVEMIND_CAPACITY_CPUS=str(SLOTS), HIVEMIND_SAMPLE_INTERVAL="0.5")
    running = OwnPoolSite(tmp_path_factory.mktemp("ownpool"), redis_url)
    running.start()
    yield running
    running.stop()


def test_a_first_task_runs_alone(site: OwnPoolSite) -> None:
    scenarios.first_task_alone(site)


def test_two_tasks_uploaded_together_run_at_the_same_time(site: OwnPoolSite) -> None:
    scenarios.two_together_run_at_once(site)


def test_ten_tasks_keep_both_slots_busy(site: OwnPoolSite) -> None:
    scenarios.ten_tasks_keep_both_slots_busy(site)
    refused = site.site.row("SELECT COUNT(*) AS n FROM tasks WHERE message LIKE '%did not take it%'")
    assert refused["n"] == 0  # the pool never sent the site a task it had no room for


def test_a_bridge_restart_keeps_capacity_right(site: OwnPoolSite) -> None:
    scenarios.restart_keeps_capacity(site)

    def nothing_held() -> bool:
        row = site.site.row("SELECT reserved_cpu_score AS reserved, cpu_score FROM nodes WHERE node_id = ?", SITE)
        held = site.site.row(
            "SELECT COUNT(*) AS n FROM tasks WHERE node_id = ? AND result_at IS NULL AND status IN ('RUNNING', 'STOPPED')", SITE
        )
        return row["reserved"] == 0 and row["cpu_score"] == SLOTS * CPU_SCORE and held["n"] == 0

    wait_for(nothing_held, timeout=30, what="the node's whole capacity free on our pool after everything ended")


def test_the_heartbeat_never_failed_over_two_minutes(site: OwnPoolSite) -> None:
    scenarios.heartbeat_never_failed(site)
