"""`hivemind vpn` as a volunteer runs it, inside the volunteer namespace behind the NAT
router, against a STAND-IN for the deployed network's join endpoint and WireGuard hub
(tests/vpn/deployed_join_standin.py, written from REACHABILITY.md) in the pool namespace.
The stand-in asks for all traffic (0.0.0.0/0, ::/0) and DNS, as the seed's example does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from hivemind_celery.core.settings import Settings
from tests.vpn.hub_kit import HUB_PORT, Hub
from tests.vpn.netns_kit import POOL_WAN, HomeInternet, dial_from, require_netns_tools, serve_in
from vpn.metrics import TunnelCollector
from vpn.tools import Tools
from vpn.tunnel import Tunnel

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
JOIN_PORT = 8099


@pytest.fixture
def internet() -> Iterator[tuple[HomeInternet, Hub]]:
    require_netns_tools()
    net = HomeInternet().open()
    hub = None
    standin = None
    try:
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
                str(JOIN_PORT),
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
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert standin.stdout is not None and standin.stdout.readline().strip() == "ready"
        yield net, hub
    finally:
        if standin is not None:
            standin.kill()
            standin.wait()
        if hub is not None:
            hub.down()
        net.close()


def vpn(net: HomeInternet, state_dir: Path, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HIVEMIND_TUNNEL": "1",
        "HIVEMIND_TUNNEL_JOIN_MODE": "deployed",
        "HIVEMIND_TUNNEL_JOIN_URL": url or f"http://{POOL_WAN}:{JOIN_PORT}/api/vpn/join",
        "HIVEMIND_TUNNEL_STATE_DIR": str(state_dir),
        "HIVEMIND_TUNNEL_INTERFACE": f"hmvpn{net.tag}",
        "HIVEMIND_USERNAME": "volunteer-7",
    }
    return subprocess.run(
        ["ip", "netns", "exec", net.volunteer, sys.executable, "-m", "hivemind.cli", "vpn", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_volunteer_behind_nat_joins_the_deployed_network_and_the_pool_reaches_it(internet, tmp_path) -> None:
    net, _hub = internet
    state = tmp_path / "tunnel"
    before = net.snapshot(net.volunteer)
    status = vpn(net, state, "status")
    assert status.returncode == 1 and "not joined" in status.stdout

    up = vpn(net, state, "up")
    assert up.returncode == 0, up.stderr
    assert "routing only 10.77.0.0/24" in up.stdout
    assert "generated this site's private key" in up.stderr  # the warning, in the log
    report = json.loads(vpn(net, state, "status", "--json").stdout)
    assert report["healthy"] and report["address"] == "10.77.0.2" and report["mode"] == "deployed"
    assert report["pool_generated_key"] is True
    routes, rules, resolv = net.snapshot(net.volunteer)
    assert (rules, resolv) == before[1:]  # no policy rules, DNS untouched
    defaults = [line for line in routes.splitlines() if "default" in line]
    assert defaults == [line for line in before[0].splitlines() if "default" in line]
    added = set(routes.splitlines()) - set(before[0].splitlines())
    assert added and all(f"hmvpn{net.tag}" in line for line in added), added

    server = serve_in(net, net.volunteer)
    try:
        done = dial_from(net, net.pool, "10.77.0.2")
        assert done.returncode == 0 and done.stdout.strip() == "hello from the volunteer", done.stderr
    finally:
        server.kill()
        server.wait()

    # The Prometheus view of the same tunnel.
    settings = Settings(tunnel_state_dir=str(state), tunnel_interface=f"hmvpn{net.tag}")
    registry = CollectorRegistry()
    registry.register(TunnelCollector(Tunnel(settings, tools=Tools(netns=net.volunteer)).status))
    assert registry.get_sample_value("hivemind_tunnel_up") == 1.0
    assert 0 <= registry.get_sample_value("hivemind_tunnel_handshake_age_seconds") < 180
    assert (
        registry.get_sample_value(
            "hivemind_tunnel_info",
            {
                "interface": f"hmvpn{net.tag}",
                "address": "10.77.0.2",
                "network": "10.77.0.0/24",
                "pool_address": "",
                "mode": "deployed",
            },
        )
        == 1.0
    )

    kept = (state / "tunnel.conf").read_text()
    assert "DNS" not in kept and "0.0.0.0/0" not in kept
    assert vpn(net, state, "down").returncode == 0
    assert net.snapshot(net.volunteer) == before
    assert registry.get_sample_value("hivemind_tunnel_up") == 0.0
    # Up again: the kept config is reused (no second join; a join now would be rate-limited by the pool).
    again = vpn(net, state, "up")
    assert again.returncode == 0, again.stderr
    assert (state / "tunnel.conf").read_text() == kept
    assert json.loads(vpn(net, state, "status", "--json").stdout)["address"] == "10.77.0.2"
    assert vpn(net, state, "down").returncode == 0
    assert net.snapshot(net.volunteer) == before


def test_a_join_url_that_does_not_answer_changes_nothing(internet, tmp_path) -> None:
    net, _hub = internet
    before = net.snapshot(net.volunteer)
    done = vpn(net, tmp_path / "t", "up", url=f"http://{POOL_WAN}:9/api/vpn/join")
    assert done.returncode == 1
    assert "did not answer" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "t" / "tunnel.conf").exists()
    assert net.snapshot(net.volunteer) == before


def test_without_cap_net_admin_one_clear_error_names_it_and_nothing_changes(internet, tmp_path) -> None:
    """`hivemind vpn up` as an unprivileged user (uid 65534, no capabilities): the join is
    kept (it changed nothing on the network), the interface is refused with the capability named."""
    import shutil
    import tempfile

    net, _hub = internet
    state = Path(tempfile.mkdtemp(prefix="hm-vpn-nobody-"))  # pytest's tmp_path is root's only
    os.chown(state, 65534, 65534)
    try:
        unprivileged_up(net, state)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def unprivileged_up(net: HomeInternet, state: Path) -> None:
    before = net.snapshot(net.volunteer)
    env = {
        **os.environ,
        "HIVEMIND_TUNNEL": "1",
        "HIVEMIND_TUNNEL_JOIN_MODE": "deployed",
        "HIVEMIND_TUNNEL_JOIN_URL": f"http://{POOL_WAN}:{JOIN_PORT}/api/vpn/join",
        "HOME": str(state),
        "HIVEMIND_TUNNEL_STATE_DIR": str(state),
        "HIVEMIND_TUNNEL_INTERFACE": f"hmvpn{net.tag}",
    }
    done = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            net.volunteer,
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            sys.executable,
            "-m",
            "hivemind.cli",
            "vpn",
            "up",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "CAP_NET_ADMIN" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert net.snapshot(net.volunteer) == before
    assert net.in_ns(net.volunteer, "ip", "link", "show", "dev", f"hmvpn{net.tag}", check=False).returncode != 0
