"""The tunnel's bring-up in a small internet of namespaces (tests/vpn/netns_kit.py):
real wireguard-go on both sides, a NAT home router between them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.vpn.hub_kit import VPN_NETWORK, Hub, volunteer_config
from tests.vpn.netns_kit import POOL_WAN, VOLUNTEER_LAN, HomeInternet, dial_from, require_netns_tools, serve_in
from vpn.config import narrow_allowed_ips, parse_config
from vpn.errors import TunnelError, TunnelToolMissing
from vpn.keys import generate_key_pair
from vpn.link import WireGuardLink
from vpn.tools import Tools

pytestmark = pytest.mark.slow


@pytest.fixture
def net() -> Iterator[HomeInternet]:
    require_netns_tools()
    internet = HomeInternet().open()
    try:
        yield internet
    finally:
        internet.close()


def test_without_a_tunnel_the_pool_cannot_reach_the_volunteer(net: HomeInternet) -> None:
    server = serve_in(net, net.volunteer)
    try:
        # The volunteer reaches out through its router ...
        assert (
            net.in_ns(
                net.volunteer,
                "python3",
                "-c",
                f"import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(('{POOL_WAN}', 9)); "
                "print(s.getsockname()[0])",
            ).stdout.strip()
            == VOLUNTEER_LAN
        )
        # ... but what the pool dials (the address the volunteer would register) never answers.
        done = dial_from(net, net.pool, VOLUNTEER_LAN)
        assert done.returncode != 0
        assert "unreachable" in done.stderr.lower() or "timed out" in done.stderr.lower()
    finally:
        server.kill()
        server.wait()


def test_tunnel_through_nat_routes_only_the_vpn_network_and_is_undone(net: HomeInternet) -> None:
    hub = Hub(net).up()
    keys = generate_key_pair()
    hub.add_peer(keys.public_key, "10.77.0.2")
    # What the seed's example asks: all traffic and DNS through the pool.
    config = parse_config(volunteer_config(hub, keys, "10.77.0.2", allowed="0.0.0.0/0, ::/0", dns="8.8.8.8, 1.1.1.1"))
    assert config.dropped_dns == ("8.8.8.8", "1.1.1.1")
    narrowed = narrow_allowed_ips(config, VPN_NETWORK)
    assert [str(n) for n in narrowed.peers[0].allowed_ips] == ["10.77.0.0/24"]
    assert "DNS" not in narrowed.render() and "0.0.0.0/0" not in narrowed.render()

    before = net.snapshot(net.volunteer)
    link = WireGuardLink(f"hmvpn{net.tag}", Tools(netns=net.volunteer))
    try:
        link.up(narrowed, VPN_NETWORK)
        assert link.kind == "userspace"  # no kernel module on this machine's kind
        age = link.wait_handshake(30, narrowed)
        assert 0 <= age < 180
        during_routes, during_rules, during_resolv = net.snapshot(net.volunteer)
        added = set(during_routes.splitlines()) - set(before[0].splitlines())
        # Only the VPN network's connected route (and its local/broadcast entries) came in.
        assert added and all(link.name in line for line in added)
        assert not any(line.startswith("default") for line in added)
        assert [line for line in during_routes.splitlines() if line.startswith("default")] == [
            line for line in before[0].splitlines() if line.startswith("default")
        ]
        assert (during_rules, during_resolv) == before[1:]
        # The pool now reaches the volunteer at its tunnel address.
        server = serve_in(net, net.volunteer)
        try:
            done = dial_from(net, net.pool, "10.77.0.2")
            assert done.returncode == 0, done.stderr
            assert done.stdout.strip() == "hello from the volunteer"
        finally:
            server.kill()
            server.wait()
    finally:
        link.down()
        hub.down()
    assert not link.exists()
    assert net.snapshot(net.volunteer) == before


def test_a_second_up_on_an_existing_interface_is_refused_and_leaves_it(net: HomeInternet) -> None:
    hub = Hub(net).up()
    try:
        keys = generate_key_pair()
        config = narrow_allowed_ips(parse_config(volunteer_config(hub, keys, "10.77.0.3")), VPN_NETWORK)
        intruder = WireGuardLink(hub.link.name, Tools(netns=net.pool))
        with pytest.raises(TunnelError, match="already exists"):
            intruder.up(config, VPN_NETWORK)
        assert hub.link.exists()
    finally:
        hub.down()


def test_wireguard_go_missing_is_one_clear_error_and_nothing_left(net: HomeInternet) -> None:
    before = net.snapshot(net.volunteer)
    keys = generate_key_pair()
    text = volunteer_config(Hub(net), keys, "10.77.0.2")
    link = WireGuardLink(f"hmvpn{net.tag}", Tools(netns=net.volunteer, wireguard_go="/nonexistent/wireguard-go"), userspace=True)
    with pytest.raises(TunnelToolMissing, match="Debian package wireguard-go"):
        link.up(narrow_allowed_ips(parse_config(text), VPN_NETWORK), VPN_NETWORK)
    assert not link.exists()
    assert net.snapshot(net.volunteer) == before


def test_a_vpn_network_overlapping_the_home_lan_is_refused(net: HomeInternet) -> None:
    import ipaddress

    before = net.snapshot(net.volunteer)
    keys = generate_key_pair()
    lan = ipaddress.ip_network("192.168.77.0/24")
    text = volunteer_config(Hub(net), keys, "192.168.77.9", allowed="192.168.77.0/24")
    link = WireGuardLink(f"hmvpn{net.tag}", Tools(netns=net.volunteer))
    with pytest.raises(TunnelError, match="overlaps"):
        link.up(narrow_allowed_ips(parse_config(text), lan), lan)
    assert not link.exists()
    assert net.snapshot(net.volunteer) == before
