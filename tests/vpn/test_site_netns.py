"""The whole site behind a NAT home router (tests/vpn/site_kit.py), with our own Node
Pool as the WireGuard hub: first the problem, then tasks over the tunnel.
Real processes throughout: pool, bridge, Celery worker, Redis, Docker, wireguard-go."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest

from tests.nodepool_kit import wait_for
from tests.vpn.netns_kit import VOLUNTEER_LAN, HomeInternet, require_netns_tools
from tests.vpn.site_kit import BRIDGE_PORT, POOL_PORT, TunnelSite
from vpn.keys import public_key_of

pytestmark = [pytest.mark.slow, pytest.mark.docker]

DIAL_TCP = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)"
EXECUTE = (
    "import sys, grpc; from proto import nodepool_pb2 as pb, nodepool_pb2_grpc as g\n"
    "stub = g.WorkerNodeServiceStub(grpc.insecure_channel(sys.argv[1]))\n"
    "try:\n    stub.ExecuteTask(pb.ExecuteTaskRequest(task_id='intruder'), timeout=10); print('ACCEPTED')\n"
    "except grpc.RpcError as e:\n    print(e.code().name)\n"
)

# A second and a half of CPU, so the usage sampler sees it run.
TASK = {
    "main.py": "import time\nprint('hello over the tunnel', flush=True)\nstart = time.time()\n"
    "while time.time() - start < 1.5:\n    pass\n"
    "open('/workspace/answer.txt', 'w').write(str(6 * 7))\n"
}


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
        wait_for(lambda: "node did not take task" in site.pool.log(), timeout=120, what="the pool failing to reach the site")
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

        # It listens on the tunnel address and loopback only, and takes ExecuteTask from the pool's
        # tunnel address only: not from its own LAN, not from loopback.
        lan = net.in_ns(net.router, sys.executable, "-c", DIAL_TCP, "192.168.77.2", str(BRIDGE_PORT), check=False)
        assert lan.returncode != 0 and "refused" in lan.stderr.lower()
        local = net.in_ns(net.volunteer, sys.executable, "-c", EXECUTE, f"127.0.0.1:{BRIDGE_PORT}", check=False)
        assert local.stdout.strip() == "PERMISSION_DENIED", local.stderr

        # The console's Overview reads the tunnel's state from the bridge's standing; Prometheus too.
        standing = site.standing()
        assert standing["tunnel"] == "up" and standing["tunnel_address"] == "10.88.0.2", standing
        assert standing["tunnel_network"] == "10.88.0.0/24" and float(standing["tunnel_handshake_at"]) > 0
        metrics = site.metrics()
        assert "hivemind_tunnel_up 1.0" in metrics and "hivemind_tunnel_handshake_age_seconds" in metrics

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
    # The site talks to the pool inside the tunnel too: while it is down, the result waits.
    site = TunnelSite(
        net, tmp_path, tunnel=True, bridge_env={"HIVEMIND_TUNNEL_NODEPOOL_ADDRESS": f"10.88.0.1:{POOL_PORT}"}
    ).start()
    try:
        site.wait_registered("10.88.0.2")
        task_id = site.submit(
            {
                "main.py": "import time\nprint('hello over the tunnel', flush=True)\n"
                "time.sleep(8)\nopen('/workspace/answer.txt', 'w').write('42')\n"
            }
        )
        site.wait_status(task_id, {"RUNNING"})
        # The tunnel dies under the running task (as when wireguard-go is killed or the link removed).
        net.in_ns(net.volunteer, "ip", "link", "delete", "dev", site.interface)
        wait_for(lambda: "tunnel back up" in site.bridge.log(), timeout=60, what="the bridge bringing the tunnel back")
        assert site.wait_status(task_id, {"COMPLETED", "FAILED"}) == "COMPLETED", dict(site.task(task_id))
        check_result(site, task_id)
        row = site.task(task_id)
        assert row["attempts"] == 1 and row["result_at"] is not None
        # Once: one result accepted by the pool for this task.
        stored = [
            r for r in site.pool.records() if r.get("task_id") == task_id and r.get("message", "").startswith("result stored")
        ]
        assert len(stored) == 1, stored
        assert site.row("SELECT COUNT(*) AS n FROM ledger WHERE task_id = ?", task_id)["n"] == 1
        assert net.in_ns(net.volunteer, "ip", "link", "show", "dev", site.interface).returncode == 0
    finally:
        site.stop()


def test_against_a_stand_in_of_the_deployed_network_the_same_round_trip(net, tmp_path) -> None:
    """The join endpoint and WireGuard hub are STAND-INS for the deployed network's, written
    from REACHABILITY.md (tests/vpn/deployed_join_standin.py): its answer asks for all
    traffic and DNS; neither is applied. Our Node Pool plays the pool's gRPC side."""
    import subprocess

    from tests.vpn.hub_kit import HUB_PORT, Hub
    from tests.vpn.netns_kit import POOL_WAN

    hub = Hub(net).up()
    standin = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            net.pool,
            sys.executable,
            "-m",
            "tests.vpn.deployed_join_standin",
            "--port",
            "8099",
            "--hub",
            hub.link.name,
            "--server-key",
            hub.keys.public_key,
            "--endpoint",
            f"{POOL_WAN}:{HUB_PORT}",
            "--network",
            "10.77.0.0/24",
            "--allowed-ips",
            "0.0.0.0/0, ::/0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    before = net.snapshot(net.volunteer)
    site = None
    try:
        assert standin.stdout is not None and standin.stdout.readline().strip() == "ready"
        site = TunnelSite(net, tmp_path, tunnel=True, deployed_join_url=f"http://{POOL_WAN}:8099/api/vpn/join").start()
        site.wait_registered("10.77.0.2")
        assert "generated this site's private key" in site.bridge.log()
        routes, rules, resolv = net.snapshot(net.volunteer)
        assert (rules, resolv) == before[1:]
        assert [r for r in routes.splitlines() if "default" in r] == [r for r in before[0].splitlines() if "default" in r]
        task_id = site.submit(TASK)
        assert site.wait_status(task_id, {"COMPLETED", "FAILED"}) == "COMPLETED", dict(site.task(task_id))
        check_result(site, task_id)
    finally:
        if site is not None:
            site.stop()
        standin.kill()
        standin.wait()
        hub.down()
    assert net.snapshot(net.volunteer) == before  # the bridge took its tunnel down when it stopped
