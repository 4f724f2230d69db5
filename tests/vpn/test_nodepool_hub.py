"""Our Node Pool as the WireGuard hub: its join API (served on loopback by the real
uvicorn server) and its WireGuard side (real wireguard-go in the pool namespace of
tests/vpn/netns_kit.py), with real login tokens."""

from __future__ import annotations

import ipaddress
import json
import urllib.request
from collections.abc import Iterator

import pytest

from nodepool.accounts import create_user
from nodepool.auth import Identity, TokenAuthority
from nodepool.nodes import Node
from nodepool.settings import NodePoolSettings
from nodepool.store import Store
from nodepool.vpn_api import JoinServer
from nodepool.vpn_hub import VpnHub
from tests.vpn.netns_kit import POOL_WAN, HomeInternet, require_netns_tools
from vpn.errors import JoinError
from vpn.join import join_own
from vpn.keys import generate_key_pair
from vpn.tools import Tools

pytestmark = pytest.mark.slow


@pytest.fixture
def pool(tmp_path) -> Iterator[tuple[HomeInternet, Store, VpnHub, JoinServer, TokenAuthority]]:
    require_netns_tools()
    net = HomeInternet().open()
    store = Store(tmp_path / "pool.db")
    settings = NodePoolSettings(
        db=tmp_path / "pool.db",
        vpn=True,
        vpn_network="10.88.0.0/24",
        vpn_interface=f"hmpool{net.tag}",
        vpn_endpoint=f"{POOL_WAN}:51820",
        vpn_userspace="userspace",
        vpn_sweep_s=0.2,
    )
    tokens = TokenAuthority(store, "s" * 40, 600)
    hub = VpnHub(store, settings, Tools(netns=net.pool))
    api = None
    try:
        hub.start()
        api = JoinServer(hub, tokens, "127.0.0.1", 0).start()
        yield net, store, hub, api, tokens
    finally:
        if api is not None:
            api.stop()
        hub.stop()
        store.close()
        net.close()


def token_for(store: Store, tokens: TokenAuthority, name: str) -> str:
    user_id = create_user(store, name, "password-of-" + name)
    return tokens.issue(Identity(user_id, name))


def hub_peers(net: HomeInternet, hub: VpnHub) -> dict[str, str]:
    out = net.in_ns(net.pool, "wg", "show", hub.link.name, "allowed-ips").stdout
    return {line.split()[0]: line.split()[1] for line in out.splitlines() if len(line.split()) == 2}


def post(url: str, body: bytes, token: str | None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, headers, method="POST"), timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_site_joins_with_only_its_public_key_and_keeps_its_address(pool) -> None:
    net, store, hub, api, tokens = pool
    url = f"http://127.0.0.1:{api.port}/api/vpn/join"
    token = token_for(store, tokens, "site-a")
    keys = generate_key_pair()
    joined = join_own(url, token, "site-a", keys)
    assert str(joined.config.address.ip) == "10.88.0.2" and joined.record.pool_address == "10.88.0.1"
    assert joined.config.private_key == keys.private_key  # made here, never sent
    assert joined.config.peers[0].public_key == hub.public_key
    assert joined.config.peers[0].endpoint == f"{POOL_WAN}:51820"
    assert hub_peers(net, hub) == {keys.public_key: "10.88.0.2/32"}
    kept = b"".join(p.read_bytes() for p in store.path.parent.glob("pool.db*"))
    assert keys.public_key.encode() in kept and keys.private_key.encode() not in kept
    # A second site gets the next address; a re-join with a new key keeps the address, swaps the key.
    other = join_own(url, token_for(store, tokens, "site-b"), "site-b", generate_key_pair())
    assert str(other.config.address.ip) == "10.88.0.3"
    new_keys = generate_key_pair()
    again = join_own(url, token, "site-a", new_keys)
    assert str(again.config.address.ip) == "10.88.0.2"
    peers = hub_peers(net, hub)
    assert keys.public_key not in peers and peers[new_keys.public_key] == "10.88.0.2/32"
    # The dispatcher dials a node with a peer at its tunnel address.
    node = Node(
        node_id="site-a",
        user_id=1,
        hostname="192.168.77.2",
        port=50053,
        status="Idle",
        memory_gb=1,
        cpu_score=100,
        gpu_score=0,
        gpu_memory_gb=0,
        gpu_name="",
        last_seen=0.0,
    )
    assert hub.address_of(node) == "10.88.0.2:50053"
    assert hub.address_of(Node(**{**node.__dict__, "user_id": 99})) == "192.168.77.2:50053"


def test_a_removed_account_loses_its_peer(pool) -> None:
    import time

    net, store, hub, api, tokens = pool
    keys = generate_key_pair()
    join_own(f"http://127.0.0.1:{api.port}/api/vpn/join", token_for(store, tokens, "leaver"), "leaver", keys)
    assert keys.public_key in hub_peers(net, hub)
    with store.transaction() as conn:
        conn.execute("DELETE FROM users WHERE username = 'leaver'")
    deadline = time.monotonic() + 10
    while keys.public_key in hub_peers(net, hub) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert keys.public_key not in hub_peers(net, hub)
    assert store.conn.execute("SELECT COUNT(*) FROM vpn_peers").fetchone()[0] == 0


def test_refusals(pool) -> None:
    net, store, hub, api, tokens = pool
    url = f"http://127.0.0.1:{api.port}/api/vpn/join"
    token = token_for(store, tokens, "site-c")
    key = generate_key_pair().public_key
    body = json.dumps({"client_name": "c", "public_key": key}).encode()
    assert post(url, body, None) == (
        401,
        {"success": False, "error": "missing token: log in to the pool and send Authorization: Bearer <token>"},
    )
    status, answer = post(url, body, "not-a-token")
    assert status == 401 and "invalid token" in answer["error"]
    status, answer = post(url, json.dumps({"public_key": "not a key"}).encode(), token)
    assert status == 400 and "public_key is not a WireGuard key" in answer["error"]
    status, answer = post(url, b"{not json", token)
    assert status == 400 and "malformed join request" in answer["error"]
    status, answer = post(url, json.dumps({"public_key": hub.public_key}).encode(), token)
    assert status == 400 and "the pool's own" in answer["error"]
    # Another account's key cannot be taken over.
    taken = generate_key_pair()
    join_own(url, token_for(store, tokens, "site-d"), "site-d", taken)
    with pytest.raises(JoinError, match="HTTP 400.*another account's"):
        join_own(url, token, "site-c", taken)
    assert hub_peers(net, hub) == {taken.public_key: "10.88.0.2/32"}


def test_the_hub_keeps_its_key_and_peers_across_a_restart(pool, tmp_path) -> None:
    net, store, hub, api, tokens = pool
    keys = generate_key_pair()
    join_own(f"http://127.0.0.1:{api.port}/api/vpn/join", token_for(store, tokens, "stayer"), "stayer", keys)
    public = hub.public_key
    hub.stop()
    assert not hub.link.exists()
    again = VpnHub(store, hub.settings, Tools(netns=net.pool)).start()
    try:
        assert again.public_key == public
        assert hub_peers(net, again) == {keys.public_key: "10.88.0.2/32"}
        assert ipaddress.ip_address(again.pool_address) == ipaddress.ip_address("10.88.0.1")
    finally:
        again.stop()
    hub.link = again.link  # the fixture's stop() finds nothing left to remove
