"""What the bridge derives from the settings once, at start: its node id, the
host it advertises, and who may call it.

Kept apart from the settings so a bad value fails at start with a message
naming the variable, not later inside a gRPC handler.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import unquote

from hivemind_celery.core import HivemindError, Settings

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The deployed Node Pool refuses to dispatch to these hostnames.
REFUSED_HOSTS = {"", "127.0.0.1", "0.0.0.0", "::", "::1"}
LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


class ConfigError(HivemindError, ValueError):
    """A bridge setting that cannot work; the message names the variable."""


@dataclass(frozen=True)
class BridgeConfig:
    node_id: str
    advertise_host: str
    allowed_networks: tuple[IpNetwork, ...] | None  # None: any caller address
    secret: str | None

    @classmethod
    def from_settings(cls, settings: Settings) -> BridgeConfig:
        if not settings.username:
            raise ConfigError("HIVEMIND_USERNAME is empty: the bridge logs in to the Node Pool as this user")
        if not settings.password.get_secret_value():
            raise ConfigError("HIVEMIND_PASSWORD is empty: the Node Pool account needs its password")
        pool_host, _ = split_address(settings.nodepool_address)
        return cls(
            node_id=settings.username,
            advertise_host=advertise_host(settings.advertise_host, pool_host),
            allowed_networks=allowed_networks(settings.bridge_allowed_callers, pool_host),
            secret=settings.bridge_secret.get_secret_value() if settings.bridge_secret else None,
        )


def split_address(address: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"HIVEMIND_NODEPOOL_ADDRESS={address!r} is not host:port")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def advertise_host(configured: str | None, pool_host: str) -> str:
    if configured is not None:
        host = configured.strip()
        if host in REFUSED_HOSTS:
            raise ConfigError(
                f"HIVEMIND_ADVERTISE_HOST={configured!r}: the Node Pool refuses to dispatch to that "
                "address; use `localhost` for a pool on this machine, else an address it can dial"
            )
        return host
    if is_loopback(pool_host):
        return "localhost"
    return _route_address(pool_host) or socket.getfqdn() or socket.gethostname()


def _route_address(pool_host: str) -> str | None:
    """This host's address on the route to the pool (a UDP connect sends nothing)."""
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(pool_host, 9, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(sockaddr)
            address = probe.getsockname()[0]
    except OSError:
        return None
    return None if address in REFUSED_HOSTS or is_loopback(address) else address


def allowed_networks(entries: list[str], pool_host: str) -> tuple[IpNetwork, ...] | None:
    """Caller allowlist; by default the addresses the pool's host name resolves to
    (plus loopback when the pool is local, for both address families)."""
    if "*" in entries:
        return None
    if not entries:
        entries = [pool_host] + (["127.0.0.0/8", "::1"] if is_loopback(pool_host) else [])
    networks: list[IpNetwork] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
            continue
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(entry, None)
        except OSError as exc:
            raise ConfigError(
                f"HIVEMIND_BRIDGE_ALLOWED_CALLERS: cannot resolve {entry!r} ({exc}); give addresses or CIDRs, or * for any caller"
            ) from exc
        for info in infos:
            networks.append(ipaddress.ip_network(str(info[4][0]).split("%")[0]))
    return tuple(dict.fromkeys(networks))


def peer_ip(peer: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP in a gRPC peer string ('ipv4:1.2.3.4:5', 'ipv6:[::1]:5'); None for others."""
    kind, _, rest = unquote(peer).partition(":")  # gRPC percent-encodes the brackets
    if kind == "ipv4":
        host = rest.rpartition(":")[0]
    elif kind == "ipv6":
        host = rest.rpartition(":")[0].strip("[]").split("%")[0]
    else:
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def caller_allowed(peer: str, networks: tuple[IpNetwork, ...] | None) -> bool:
    if networks is None:
        return True
    address = peer_ip(peer)
    return address is not None and any(address in network for network in networks)
