"""Asking a pool for a tunnel: nothing on the host changes here; the caller keeps
the answer (store.py) and brings it up (link.py).

Two pools, two joins:
- the deployed network's `POST /api/vpn/join` (REACHABILITY.md): no authentication,
  body `{"client_name"}`, and the answer holds a whole wg-quick file whose private
  key **the pool generated** (so the pool knows it: logged as a warning, recorded);
- our own Node Pool's `POST /api/vpn/join`: authenticated by the site's pool login
  (`Authorization: Bearer <token>`), body `{"client_name", "public_key"}`: the key
  pair is made here and only the public half leaves; the pool answers with the
  tunnel address, the VPN network, its own key, endpoint and tunnel address.

Every answer is checked whole before anything is kept: a refusal (429, 403, 500),
an answer that is not JSON, a key that is not a key or a VPN network that is not a
small private one gives a JoinError naming it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from vpn.config import TunnelConfig, check_vpn_network, narrow_allowed_ips, parse_config
from vpn.errors import JoinError, TunnelConfigError
from vpn.keys import KeyPair, validate_key
from vpn.store import JoinRecord

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 64 * 1024
JOIN_TIMEOUT = 15.0
DEFAULT_KEEPALIVE = 25  # behind NAT the home router forgets the UDP mapping without it
_CLIENT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,20}$")  # what the deployed pool accepts


@dataclass(frozen=True)
class Joined:
    config: TunnelConfig  # narrowed to record.network, without DNS
    record: JoinRecord


def check_client_name(name: str) -> str:
    if not _CLIENT_NAME.match(name or ""):
        raise JoinError(f"client name {name[:40]!r} must be 1-20 letters, digits, _ or - (the pool's rule)")
    return name


def check_join_url(url: str) -> str:
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise JoinError(f"join URL {url[:100]!r} must be an http(s) URL with a host")
    if parts.username or parts.password:
        raise JoinError("join URL must not carry credentials")
    if parts.scheme == "http":
        try:
            plain_ok = ipaddress.ip_address(parts.hostname).is_private
        except ValueError:
            plain_ok = parts.hostname == "localhost"
        if not plain_ok:
            raise JoinError(f"join URL {url[:100]!r} is plain http to a public host: the answer carries tunnel keys, use https")
    return url


def _post(url: str, body: dict[str, Any], token: str | None, timeout: float) -> dict[str, Any]:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(check_join_url(url), data=json.dumps(body).encode(), headers=headers, method="POST")
    status: int
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - scheme checked above
            status, raw = response.status, response.read(MAX_ANSWER_BYTES + 1)
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read(MAX_ANSWER_BYTES + 1)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise JoinError(f"join URL {url} did not answer: {reason}") from None
    if len(raw) > MAX_ANSWER_BYTES:
        raise JoinError(f"join answer from {url} is larger than {MAX_ANSWER_BYTES} bytes")
    try:
        answer = json.loads(raw)
    except ValueError:
        raise JoinError(f"join answer from {url} (HTTP {status}) is not JSON: {raw[:80]!r}") from None
    if not isinstance(answer, dict):
        raise JoinError(f"join answer from {url} (HTTP {status}) is not a JSON object")
    if status == 429:
        wait = answer.get("rate_limit_seconds")
        raise JoinError(f"the pool rate-limits joins (HTTP 429): try again in {wait if wait is not None else 'a few'} s")
    if status != 200 or answer.get("success") is not True:
        error = str(answer.get("error") or answer.get("message") or "no reason given")[:200]
        raise JoinError(f"the pool refused the join (HTTP {status}): {error}")
    return answer


def _field(answer: dict[str, Any], name: str) -> str:
    value = answer.get(name)
    if not isinstance(value, str) or not value.strip():
        raise JoinError(f"join answer has no {name}")
    return value.strip()


def join_deployed(url: str, client_name: str, timeout: float = JOIN_TIMEOUT) -> Joined:
    """The deployed network's join. Its VPN network is the answer's Address network (a /24)."""
    answer = _post(url, {"client_name": check_client_name(client_name)}, None, timeout)
    try:
        config = parse_config(_field(answer, "config"), "the pool's join answer config")
        address = config.address
        network = check_vpn_network(address.network)
        if address.network.prefixlen == address.max_prefixlen:
            raise TunnelConfigError(f"Address {address} does not say the VPN network's size")
        client_ip = answer.get("client_ip")
        if client_ip is not None and str(client_ip) != str(address.ip):
            raise TunnelConfigError(f"client_ip {str(client_ip)[:40]!r} is not the config's Address {address.ip}")
        endpoint = config.peers[0].endpoint
        if not endpoint:
            raise TunnelConfigError("the config's [Peer] has no Endpoint")
    except TunnelConfigError as exc:
        raise JoinError(f"join answer from {url} is unusable: {exc}") from None
    log.warning(
        "joined the deployed network's VPN as %s (%s): that pool generated this site's private key and knows it",
        client_name,
        address.ip,
    )
    record = JoinRecord(
        mode="deployed",
        network=str(network),
        pool_address=None,
        endpoint=endpoint,
        joined_at=datetime.now(UTC).isoformat(),
        client_name=client_name,
        pool_generated_key=True,
    )
    return Joined(_with_keepalive(narrow_allowed_ips(config, network)), record)


def join_own(url: str, token: str, client_name: str, keys: KeyPair, timeout: float = JOIN_TIMEOUT) -> Joined:
    """Our own Node Pool's join: only `keys.public_key` is sent."""
    body = {"client_name": check_client_name(client_name), "public_key": keys.public_key}
    answer = _post(url, body, token, timeout)
    try:
        network = check_vpn_network(ipaddress.ip_network(_field(answer, "network"), strict=True))
        client_ip = ipaddress.ip_address(_field(answer, "client_ip"))
        pool_ip = ipaddress.ip_address(_field(answer, "pool_address"))
        for what, ip in (("client_ip", client_ip), ("pool_address", pool_ip)):
            if ip not in network or ip in (network.network_address, network.broadcast_address):
                raise TunnelConfigError(f"{what} {ip} is not a host of the VPN network {network}")
        server_key = validate_key(_field(answer, "server_public_key"), "server_public_key")
        keepalive = answer.get("persistent_keepalive", DEFAULT_KEEPALIVE)
        if not isinstance(keepalive, int) or not 0 <= keepalive <= 65535:
            raise TunnelConfigError("persistent_keepalive must be a whole number of seconds")
        endpoint = _field(answer, "server_endpoint")
        text = (
            f"[Interface]\nPrivateKey = {keys.private_key}\nAddress = {client_ip}/{network.prefixlen}\n\n"
            f"[Peer]\nPublicKey = {server_key}\nEndpoint = {endpoint}\nAllowedIPs = {network}\n"
            f"PersistentKeepalive = {keepalive or DEFAULT_KEEPALIVE}\n"
        )
        config = parse_config(text, "the pool's join answer")
    except (TunnelConfigError, ValueError) as exc:
        raise JoinError(f"join answer from {url} is unusable: {exc}") from None
    log.info("joined our Node Pool's VPN as %s (%s); only the public key was sent", client_name, client_ip)
    record = JoinRecord(
        mode="own",
        network=str(network),
        pool_address=str(pool_ip),
        endpoint=endpoint,
        joined_at=datetime.now(UTC).isoformat(),
        client_name=client_name,
    )
    return Joined(config, record)


def _with_keepalive(config: TunnelConfig) -> TunnelConfig:
    peers = tuple(p if p.persistent_keepalive else replace(p, persistent_keepalive=DEFAULT_KEEPALIVE) for p in config.peers)
    return replace(config, peers=peers)
