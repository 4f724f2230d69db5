"""The hub's peers in the pool's database: one tunnel address per account, kept across
restarts; a re-join with a new key keeps the address and replaces the key."""

from __future__ import annotations

import ipaddress
import sqlite3
import time
from dataclasses import dataclass

from nodepool.errors import Refused
from nodepool.store import Store
from vpn.config import Network


@dataclass(frozen=True)
class VpnPeer:
    user_id: int
    public_key: str
    address: str
    client_name: str


def _peer(row: sqlite3.Row) -> VpnPeer:
    return VpnPeer(row["user_id"], row["public_key"], row["address"], row["client_name"])


def all_peers(store: Store) -> list[VpnPeer]:
    return [_peer(r) for r in store.conn.execute("SELECT * FROM vpn_peers ORDER BY user_id").fetchall()]


def peer_of(store: Store, user_id: int) -> VpnPeer | None:
    row = store.conn.execute("SELECT * FROM vpn_peers WHERE user_id = ?", (user_id,)).fetchone()
    return None if row is None else _peer(row)


def admit(
    store: Store, user_id: int, public_key: str, client_name: str, network: Network, pool_address: str
) -> tuple[VpnPeer, str | None]:
    """The account's peer with `public_key` (a new address, or its kept one); and the key it
    replaced, if any, for the caller to remove from the interface."""
    reserved = {str(network.network_address), str(network.broadcast_address), pool_address}
    with store.transaction() as conn:
        holder = conn.execute("SELECT user_id FROM vpn_peers WHERE public_key = ?", (public_key,)).fetchone()
        if holder is not None and holder["user_id"] != user_id:
            raise Refused("this public key is another account's")
        old = conn.execute("SELECT * FROM vpn_peers WHERE user_id = ?", (user_id,)).fetchone()
        if old is not None:
            conn.execute(
                "UPDATE vpn_peers SET public_key = ?, client_name = ?, joined_at = ? WHERE user_id = ?",
                (public_key, client_name, time.time(), user_id),
            )
            replaced = old["public_key"] if old["public_key"] != public_key else None
            return VpnPeer(user_id, public_key, old["address"], client_name), replaced
        taken = {r[0] for r in conn.execute("SELECT address FROM vpn_peers").fetchall()} | reserved
        address = next((str(ip) for ip in network.hosts() if str(ip) not in taken), None)
        if address is None:
            raise Refused(f"the VPN network {network} has no free address left")
        conn.execute(
            "INSERT INTO vpn_peers(user_id, public_key, address, client_name, joined_at) VALUES (?, ?, ?, ?, ?)",
            (user_id, public_key, address, client_name, time.time()),
        )
        return VpnPeer(user_id, public_key, address, client_name), None


def orphans(store: Store) -> list[VpnPeer]:
    """Peers whose account is gone."""
    rows = store.conn.execute("SELECT p.* FROM vpn_peers p LEFT JOIN users u ON u.id = p.user_id WHERE u.id IS NULL").fetchall()
    return [_peer(r) for r in rows]


def forget(store: Store, user_id: int) -> None:
    with store.transaction() as conn:
        conn.execute("DELETE FROM vpn_peers WHERE user_id = ?", (user_id,))


def tunnel_address_of_node(store: Store, node_user_id: int) -> str | None:
    peer = peer_of(store, node_user_id)
    return None if peer is None else str(ipaddress.ip_address(peer.address))
