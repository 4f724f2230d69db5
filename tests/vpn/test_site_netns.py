"""The whole site behind a NAT home router (tests/vpn/site_kit.py), with our own Node
Pool as the WireGuard hub: first the problem, then tasks over the tunnel.
Real processes throughout: pool, bridge, Celery worker, Redis, Docker, wireguard-go."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.conftest import PYTHON_IMAGE
from tests.nodepool_kit import wait_for
from tests.vpn.netns_kit import VOLUNTEER_LAN, HomeInternet, require_netns_tools
from tests.vpn.site_kit import TunnelSite
from vpn.keys import public_key_of

pytestmark = [pytest.mark.slow, pytest.mark.docker]

TASK = {"main.py": "import os\nprint('hello over the tunnel', flush=True)\n"
                   "open('/workspace/answer.txt', 'w').write(str(6 * 7))\n"}


@pytest.fixture
def net(docker_client) -> Iterator[HomeInternet]:
    require_netns_tools()
    internet = HomeInternet().open()
    try:
        yield internet
    finally:
        internet.close()


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
        with site.result(task_id) as result:
            names = set(result.namelist())
            assert "answer.txt" in names or any(n.endswith("answer.txt") for n in names), names
            answer = next(n for n in names if n.endswith("answer.txt"))
            assert result.read(answer) == b"42"
            report = json.loads(result.read("execution_report.json"))
        assert "hello over the tunnel" in json.dumps(report) or "hello over the tunnel" in site.cli(
            "status", task_id).stdout + site.cli("logs", task_id).stdout
        assert report["usage"]["cpu_percent"] >= 0 and report["duration_seconds"] > 0
        assert PYTHON_IMAGE in site.worker.log() or "docker" in site.worker.log().lower()

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
