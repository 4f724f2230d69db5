"""The whole chain (as in test_e2e_chain.py, everything real) surviving a restart in
the middle of a task: the Node Pool process stopped and started again, and the
bridge process killed with SIGKILL and started again. Either way the result is
delivered, once, and the node is paid once."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from hivemind_celery.core import keys
from tests.e2e_kit import (
    OWNER,
    SITE,
    Site,
    expected_reward,
    fetch_result,
    start_site,
    submit,
    wait_status,
    write_zip,
)
from tests.nodepool_kit import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.redis]

TASK = """\
import time
print("started", flush=True)
time.sleep(8)
with open("done.txt", "w") as out:
    out.write("done")
print("finished", flush=True)
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, redis_url: str, start_worker) -> Iterator[Site]:  # noqa: ANN001
    running = start_site(tmp_path_factory.mktemp("e2e-restart"), redis_url, start_worker)
    yield running
    running.stop()


def run_through_restart(site: Site, tmp_path: Path, restart) -> tuple[str, dict, int, int]:  # noqa: ANN001
    """Submit, restart while it runs, wait for the result; (task id, report, node gain, owner loss)."""
    node_before, owner_before = site.balance(SITE), site.balance(OWNER)
    task_id = submit(site, write_zip(tmp_path, {"main.py": TASK}))
    wait_for(lambda: "started" in site.cli("logs", task_id).stdout, timeout=120, what="the task running")
    assert site.task(task_id)["status"] == "RUNNING"
    restart()
    assert wait_status(site, task_id, {"COMPLETED", "FAILED"}) == "COMPLETED", site.task(task_id)["message"]
    with fetch_result(site, task_id, tmp_path) as result:
        assert result.read("done.txt") == b"done"
        report = json.loads(result.read("execution_report.json"))
    assert report["task_id"] == task_id and report["status"] == "succeeded"
    return task_id, report, site.balance(SITE) - node_before, owner_before - site.balance(OWNER)


def stored_results(site: Site, task_id: str) -> int:
    return sum(1 for r in site.pool.log_records() if r.get("task_id") == task_id and r["message"].startswith("result stored"))


def test_pool_restarted_mid_task_still_gets_the_result(site: Site, tmp_path: Path) -> None:
    def restart() -> None:
        site.pool.stop(signal.SIGTERM)
        time.sleep(2)  # the bridge finds the pool down and retries
        site.start_pool()

    task_id, report, gained, paid = run_through_restart(site, tmp_path, restart)
    assert gained == paid == expected_reward(report)
    assert stored_results(site, task_id) == 1


def test_bridge_killed_mid_task_delivers_the_result_exactly_once(site: Site, tmp_path: Path) -> None:
    def restart() -> None:
        site.bridge.stop(signal.SIGKILL)
        time.sleep(2)
        site.start_bridge()

    task_id, report, gained, paid = run_through_restart(site, tmp_path, restart)
    assert gained == paid == expected_reward(report)
    assert stored_results(site, task_id) == 1
    wait_for(
        lambda: not redis.Redis.from_url(site.redis_url).hexists(keys.bridge_owed(SITE), task_id),
        timeout=30,
        what="the bridge's outbox letting go of the delivered task",
    )
    assert "finished" in site.cli_ok("logs", task_id)
