"""A WireGuard hub in the pool namespace for link tests: this project's own
WireGuardLink, run there with a ListenPort and one peer per volunteer."""

from __future__ import annotations

import ipaddress

from tests.vpn.netns_kit import POOL_WAN, HomeInternet
from vpn.config import Peer, TunnelConfig
from vpn.keys import KeyPair, generate_key_pair
from vpn.link import WireGuardLink
from vpn.tools import Tools

VPN_NETWORK = ipaddress.ip_network("10.77.0.0/24")
HUB_ADDRESS = ipaddress.ip_interface("10.77.0.1/24")
HUB_PORT = 51820


class Hub:
    def __init__(self, net: HomeInternet) -> None:
        self.net = net
        self.keys: KeyPair = generate_key_pair()
        self.link = WireGuardLink(f"hmhub{net.tag}", Tools(netns=net.pool), userspace=True)

    @property
    def endpoint(self) -> str:
        return f"{POOL_WAN}:{HUB_PORT}"

    def up(self, peers: tuple[Peer, ...] = ()) -> Hub:
        config = TunnelConfig(private_key=self.keys.private_key, addresses=(HUB_ADDRESS,), peers=peers, listen_port=HUB_PORT)
        self.link.up(config, VPN_NETWORK)
        return self

    def add_peer(self, public_key: str, address: str) -> None:
        self.link.tools.wg("set", self.link.name, "peer", public_key, "allowed-ips", f"{address}/32")

    def down(self) -> None:
        self.link.down()


def volunteer_config(hub: Hub, keys: KeyPair, address: str, allowed: str = "10.77.0.0/24", dns: str = "") -> str:
    """A wg-quick file as a pool would hand it out (DNS and AllowedIPs as asked)."""
    lines = ["[Interface]", f"PrivateKey = {keys.private_key}", f"Address = {address}/24"]
    if dns:
        lines.append(f"DNS = {dns}")
    lines += [
        "MTU = 1420",
        "",
        "[Peer]",
        f"PublicKey = {hub.keys.public_key}",
        f"Endpoint = {hub.endpoint}",
        f"AllowedIPs = {allowed}",
        "PersistentKeepalive = 25",
    ]
    return "\n".join(lines) + "\n"
