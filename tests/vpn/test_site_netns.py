"""The whole site behind a NAT home router (tests/vpn/site_kit.py), with our own Node
Pool as the WireGuard hub: first the problem, then tasks over the tunnel.
Real processes throughout: pool, bridge, Celery worker, Redis, Docker, wireguard-go."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.nodepool_kit import wait_for
from tests.vpn.netns_kit import VOLUNTEER_LAN, HomeInternet, require_netns_tools
from tests.vpn.site_kit import TunnelSite
from vpn.keys import public_key_of

pytestmark = [pytest.mark.slow, pytest.mark.docker]

# A second and a half of CPU, so the usage sampler sees it run.
TASK = {"main.py": "import time\nprint('hello over the tunnel', flush=True)\nstart = time.time()\n"
                   "while time.time() - start < 1.5:\n    pass\n"
                   "open('/workspace/answer.txt', 'w').write(str(6 * 7))\n"}


@pytest.fixture
def net(docker_client) -> Iterator[HomeInternet]:
    require_netns_tools()
    internet = HomeInternet().open()
    try:
        yield internet
    finally:
        internet.close()


def check_result(site: TunnelSite, task_id: str) -> dict:
    """The task ran in Docker on the site; its output, usage and result zip reached the pool."""
    with site.result(task_id) as result:
        names = set(result.namelist())
        assert {"main.py", "answer.txt", "execution_report.json", "task_logs.txt"} <= names, names
        assert result.read("answer.txt") == b"42"
        assert "hello over the tunnel" in result.read("task_logs.txt").decode()
        report = json.loads(result.read("execution_report.json"))
    assert report["task_id"] == task_id and report["status"] == "succeeded" and report["exit_code"] == 0
    assert report["usage"]["samples"] > 0
    assert "hello over the tunnel" in site.cli("logs", task_id).stdout
    return report


def start_site(net: HomeInternet, tmp_path, tunnel: bool) -> TunnelSite:
    return TunnelSite(net, tmp_path, tunnel=tunnel).start()


def test_without_a_tunnel_the_pool_cannot_dispatch_to_a_site_behind_nat(net, tmp_path) -> None:
    site = start_site(net, tmp_path, tunnel=False)
    try:
        site.wait_registered(VOLUNTEER_LAN)  # the private address is all it can say
        task_id = site.submit(TASK)
        wait_for(lambda: "node did not take task" in site.pool.log(), timeout=120,
                 what="the pool failing to reach the site")
        failure = [r for r in site.pool.records() if r.get("task_id") == task_id and "did not take" in r.get("message", "")]
        assert failure and "UNAVAILABLE" in failure[0]["message"]
        assert site.task(task_id)["status"] == "PENDING"
        assert "ExecuteTask" not in site.bridge.log() or task_id not in site.bridge.log()
    finally:
        site.stop()


def test_over_the_tunnel_a_task_runs_in_docker_and_comes_back(net, tmp_path) -> None:
    site = start_site(net, tmp_path, tunnel=True)
    try:
        site.wait_registered("10.88.0.2")
        # Only the public key left the site: the pool holds it, never the private one.
        private = (site.state_dir / "private.key").read_text().strip()
        peer = site.row("SELECT public_key, address, joined_at FROM vpn_peers")
        assert peer["public_key"] == public_key_of(private) and peer["address"] == "10.88.0.2"
        kept = b"".join(p.read_bytes() for p in tmp_path.glob("pool.db*"))
        assert private.encode() not in kept

        task_id = site.submit(TASK)
        assert site.wait_status(task_id, {"COMPLETED", "FAILED"}) == "COMPLETED", dict(site.task(task_id))
        check_result(site, task_id)

        # A restart of the site reuses its kept config: same address, no second join.
        site.bridge.stop()
        site.bridge.start()
        site.wait_registered("10.88.0.2")
        again = site.row("SELECT public_key, address, joined_at FROM vpn_peers")
        assert tuple(again) == tuple(peer)
        second = site.submit(TASK)
        assert site.wait_status(second, {"COMPLETED", "FAILED"}) == "COMPLETED"
    finally:
        site.stop()


def test_the_tunnel_torn_down_mid_task_comes_back_and_the_result_arrives_once(net, tmp_path) -> None:
    site = start_site(net, tmp_path, tunnel=True)
    try:
        site.wait_registered("10.88.0.2")
        task_id = site.submit({"main.py": "import time\nprint('hello over the tunnel', flush=True)\n"
                                          "time.sleep(8)\nopen('/workspace/answer.txt', 'w').write('42')\n"})
        site.wait_status(task_id, {"RUNNING"})
        # The tunnel dies under the running task (as when wireguard-go is killed or the link removed).
        net.in_ns(net.volunteer, "ip", "link", "delete", "dev", site.interface)
        wait_for(lambda: "tunnel back up" in site.bridge.log(), timeout=60, what="the bridge bringing the tunnel back")
        assert site.wait_status(task_id, {"COMPLETED", "FAILED"}) == "COMPLETED", dict(site.task(task_id))
        check_result(site, task_id)
        row = site.task(task_id)
        assert row["attempts"] == 1 and row["result_at"] is not None
        # Once: one result accepted by the pool for this task.
        stored = [r for r in site.pool.records()
                  if r.get("task_id") == task_id and r.get("message", "").startswith("result stored")]
        assert len(stored) == 1, stored
        assert site.row("SELECT COUNT(*) AS n FROM ledger WHERE task_id = ?", task_id)["n"] == 1
        assert net.in_ns(net.volunteer, "ip", "link", "show", "dev", site.interface).returncode == 0
    finally:
        site.stop()
