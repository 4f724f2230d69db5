"""Joins against a stand-in for the deployed network's endpoint (tests/vpn/deployed_join_standin.py,
written from REACHABILITY.md), on loopback: answers and refusals. Nothing on the host
changes on a refusal: no file kept, no interface made."""

from __future__ import annotations

import socket
import stat
from collections.abc import Iterator

import pytest

from hivemind_celery.core.settings import Settings
from tests.vpn.deployed_join_standin import StandIn
from vpn.errors import JoinError
from vpn.join import check_join_url, join_deployed, join_own
from vpn.keys import generate_key_pair
from vpn.tunnel import Tunnel

SERVER = generate_key_pair()


@pytest.fixture
def standin(request) -> Iterator[StandIn]:
    misbehave = getattr(request, "param", None)
    server = StandIn(SERVER.public_key, "198.18.0.1:51820", misbehave=misbehave).start()
    try:
        yield server
    finally:
        server.stop()


def tunnel_for(tmp_path, url: str, mode: str = "deployed") -> Tunnel:
    settings = Settings(
        tunnel=True,
        tunnel_join_mode=mode,
        tunnel_join_url=url,
        tunnel_state_dir=str(tmp_path / "tunnel"),
        tunnel_interface="hmtestjoin0",
        username="volunteer-1",
    )
    return Tunnel(settings, token=lambda: "a-login-token")


def test_deployed_join_keeps_a_narrowed_config_without_dns(standin: StandIn, tmp_path, caplog) -> None:
    tunnel = tunnel_for(tmp_path, standin.url)
    joined = tunnel.join()
    assert standin.requests == [{"client_name": "volunteer-1"}]
    assert str(joined.config.address) == "10.0.0.2/24"
    assert joined.record.pool_generated_key and joined.record.network == "10.0.0.0/24"
    assert "generated this site's private key" in caplog.text
    kept = (tmp_path / "tunnel" / "tunnel.conf").read_text()
    assert "DNS" not in kept and "AllowedIPs = 10.0.0.0/24" in kept and "PersistentKeepalive = 25" in kept
    assert stat.S_IMODE((tmp_path / "tunnel" / "tunnel.conf").stat().st_mode) == 0o600
    # Kept and reused: no second join.
    config, record = tunnel.config()
    assert config == joined.config and len(standin.requests) == 1
    assert joined.config.private_key not in caplog.text


def test_a_join_asking_for_all_traffic_is_narrowed(tmp_path) -> None:
    server = StandIn(SERVER.public_key, "198.18.0.1:51820", allowed_ips="0.0.0.0/0, ::/0").start()
    try:
        joined = join_deployed(server.url, "vol")
    finally:
        server.stop()
    assert [str(n) for n in joined.config.peers[0].allowed_ips] == ["10.0.0.0/24"]


@pytest.mark.parametrize(
    ("standin", "message"),
    [
        ("429", "rate-limits joins \\(HTTP 429\\): try again in 5 s"),
        ("500", "refused the join \\(HTTP 500\\): failed to generate config"),
        ("notjson", "is not JSON"),
        ("badkey", "unusable: the pool's join answer config: peer PublicKey is not a WireGuard key"),
    ],
    indirect=["standin"],
)
def test_refusals_are_clear_and_change_nothing(standin: StandIn, tmp_path, message: str) -> None:
    tunnel = tunnel_for(tmp_path, standin.url)
    with pytest.raises(JoinError, match=message):
        tunnel.up()
    assert not tunnel.store.exists()
    assert not tunnel.link.exists()


def test_the_rate_limit_of_the_real_endpoint_is_reported(standin: StandIn) -> None:
    join_deployed(standin.url, "first")
    with pytest.raises(JoinError, match="HTTP 429"):
        join_deployed(standin.url, "second")


def test_a_join_url_that_does_not_answer(tmp_path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tunnel = tunnel_for(tmp_path, f"http://127.0.0.1:{port}/api/vpn/join")
    with pytest.raises(JoinError, match="did not answer"):
        tunnel.up()
    assert not tunnel.store.exists() and not tunnel.link.exists()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "must be an http"),
        ("ftp://pool.example/join", "must be an http"),
        ("http://pool.example.com/api/vpn/join", "plain http to a public host"),
        ("https://user:pw@pool.example.com/api/vpn/join", "must not carry credentials"),
    ],
)
def test_bad_join_urls(url: str, message: str) -> None:
    with pytest.raises(JoinError, match=message):
        check_join_url(url)


def test_a_bad_client_name_is_refused_before_anything_is_sent(standin: StandIn) -> None:
    with pytest.raises(JoinError, match="client name"):
        join_deployed(standin.url, "a name with spaces")
    assert standin.requests == []


def test_own_mode_without_a_login_refuses(tmp_path, standin: StandIn) -> None:
    settings = Settings(tunnel_join_url=standin.url, tunnel_state_dir=str(tmp_path / "t"))
    with pytest.raises(JoinError, match="pool login"):
        Tunnel(settings).join()


def test_own_mode_answer_missing_fields_is_unusable(standin: StandIn) -> None:
    # The deployed answer has none of our pool's fields: refused as unusable, whole.
    with pytest.raises(JoinError, match="join answer has no network"):
        join_own(standin.url, "token", "vol", generate_key_pair())
