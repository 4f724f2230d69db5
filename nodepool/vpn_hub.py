"""Our Node Pool as the WireGuard hub for sites behind a home router.

It keeps its own key pair (in the database's meta table), brings its interface up
with every kept peer (kernel WireGuard or wireguard-go, through vpn/link.py: only its
VPN network is routed), admits a site's public key live (`wg set ... peer`), drops a
peer whose account is gone (a sweep every few seconds), and tells the dispatcher the
tunnel address to dial for a node whose account has a peer.
"""

from __future__ import annotations

import ipaddress
import logging
import threading

from nodepool import vpn_peers
from nodepool.errors import Refused
from nodepool.nodes import Node
from nodepool.settings import NodePoolSettings
from nodepool.store import Store
from vpn.config import Peer, TunnelConfig, check_vpn_network
from vpn.errors import TunnelConfigError
from vpn.keys import generate_key_pair, public_key_of, validate_key
from vpn.link import WireGuardLink
from vpn.tools import Tools

log = logging.getLogger("hivemind.nodepool")

_KEY_META = "vpn_private_key"
KEEPALIVE = 25


class VpnHub:
    def __init__(self, store: Store, settings: NodePoolSettings, tools: Tools | None = None) -> None:
        if not settings.vpn_endpoint:
            raise ValueError(
                "HIVEMIND_NODEPOOL_VPN_ENDPOINT (host:port the sites reach the hub's UDP port at) is "
                "required with HIVEMIND_NODEPOOL_VPN"
            )
        self.store = store
        self.settings = settings
        self.network = check_vpn_network(ipaddress.ip_network(settings.vpn_network, strict=True))
        self.pool_address = str(next(self.network.hosts()))
        self._private_key = store.set_meta_once(_KEY_META, generate_key_pair().private_key)
        self.public_key = public_key_of(self._private_key)
        userspace = {"auto": None, "kernel": False, "userspace": True}[settings.vpn_userspace]
        self.link = WireGuardLink(settings.vpn_interface, tools, userspace=userspace)
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> VpnHub:
        peers = tuple(
            Peer(public_key=p.public_key, allowed_ips=(ipaddress.ip_network(f"{p.address}/32"),))
            for p in vpn_peers.all_peers(self.store)
        )
        config = TunnelConfig(
            private_key=self._private_key,
            addresses=(ipaddress.ip_interface(f"{self.pool_address}/{self.network.prefixlen}"),),
            peers=peers,
            listen_port=self.settings.vpn_listen_port,
        )
        self.link.up(config, self.network)
        self._sweeper = threading.Thread(target=self._sweep_loop, name="vpn-sweep", daemon=True)
        self._sweeper.start()
        log.info(
            "VPN hub up on %s: %s, %d kept peer(s), endpoint %s",
            self.link.name,
            self.network,
            len(peers),
            self.settings.vpn_endpoint,
        )
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(5)
        self.link.down()

    # -- joins ------------------------------------------------------------------------
    def join(self, user_id: int, username: str, public_key: str, client_name: str) -> dict[str, object]:
        """Admit the account's key; the answer our join client (vpn/join.py join_own) reads."""
        try:
            key = validate_key(public_key, "public_key")
        except TunnelConfigError as exc:
            raise Refused(str(exc)) from None
        if key == self.public_key:
            raise Refused("public_key is the pool's own")
        with self._lock:
            peer, replaced = vpn_peers.admit(self.store, user_id, key, client_name or username, self.network, self.pool_address)
            if replaced:
                self.link.tools.wg("set", self.link.name, "peer", replaced, "remove")
            self.link.tools.wg("set", self.link.name, "peer", key, "allowed-ips", f"{peer.address}/32")
        log.info("VPN peer admitted: %s at %s", username, peer.address, extra={"node_id": username})
        return {
            "success": True,
            "message": "joined",
            "client_name": peer.client_name,
            "client_ip": peer.address,
            "network": str(self.network),
            "pool_address": self.pool_address,
            "server_public_key": self.public_key,
            "server_endpoint": self.settings.vpn_endpoint,
            "persistent_keepalive": KEEPALIVE,
        }

    # -- removed accounts ------------------------------------------------------------------
    def sweep(self) -> int:
        """Drop the peers of accounts that no longer exist; how many were dropped."""
        dropped = 0
        for peer in vpn_peers.orphans(self.store):
            with self._lock:
                self.link.tools.wg("set", self.link.name, "peer", peer.public_key, "remove", check=False)
                vpn_peers.forget(self.store, peer.user_id)
            log.info("VPN peer %s dropped: its account was removed", peer.address)
            dropped += 1
        return dropped

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.settings.vpn_sweep_s):
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - the sweep must outlive one bad pass
                log.exception("VPN sweep failed")

    # -- dispatch ---------------------------------------------------------------------
    def address_of(self, node: Node) -> str:
        """Where to dial the node: its tunnel address when its account has a peer."""
        tunnel = vpn_peers.tunnel_address_of_node(self.store, node.user_id)
        return node.address if tunnel is None else f"{tunnel}:{node.port}"
