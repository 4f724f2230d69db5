"""The tunnel config: a wg-quick-style file, parsed strictly, narrowed, and emitted.

What this site does with a config differs from wg-quick on purpose:
- DNS is read (so a join answer carrying it still parses) and never applied;
- AllowedIPs is narrowed to the pool's VPN network (`narrow_allowed_ips`): a pool
  asking for 0.0.0.0/0 would otherwise get all of the volunteer's traffic;
- PreUp/PostUp/PreDown/PostDown (commands wg-quick would run as root) are refused;
- `setconf_text` is what `wg setconf` takes: only WireGuard's own keys.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass, field, replace

from vpn.errors import TunnelConfigError
from vpn.keys import validate_key

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

INTERFACE_KEYS = {"privatekey", "address", "dns", "mtu", "listenport"}
PEER_KEYS = {"publickey", "presharedkey", "endpoint", "allowedips", "persistentkeepalive"}
HOOK_KEYS = {"preup", "postup", "predown", "postdown"}
IGNORED_KEYS = {"table", "saveconfig"}  # wg-quick's own; we never let it touch routes or save
_ENDPOINT = re.compile(r"^(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<host>[A-Za-z0-9.-]{1,253})):(?P<port>\d{1,5})$")
MAX_CONFIG_BYTES = 64 * 1024


@dataclass(frozen=True)
class Peer:
    public_key: str
    endpoint: str | None = None
    allowed_ips: tuple[Network, ...] = ()
    persistent_keepalive: int | None = None
    preshared_key: str | None = None


@dataclass(frozen=True)
class TunnelConfig:
    private_key: str
    addresses: tuple[Interface, ...]
    peers: tuple[Peer, ...]
    mtu: int | None = None
    listen_port: int | None = None
    dropped_dns: tuple[str, ...] = field(default=())  # read from the file, never applied

    def __repr__(self) -> str:  # never show the private key
        return f"TunnelConfig(addresses={self.addresses!r}, peers={self.peers!r}, mtu={self.mtu!r})"

    @property
    def address(self) -> Interface:
        return self.addresses[0]

    def render(self) -> str:
        """The file kept in the state directory: wg-quick's format, without DNS."""
        lines = ["[Interface]", f"PrivateKey = {self.private_key}", "Address = " + ", ".join(str(a) for a in self.addresses)]
        if self.mtu is not None:
            lines.append(f"MTU = {self.mtu}")
        if self.listen_port is not None:
            lines.append(f"ListenPort = {self.listen_port}")
        lines += _peer_lines(self.peers)
        return "\n".join(lines) + "\n"

    def setconf_text(self) -> str:
        """What `wg setconf` reads: WireGuard's keys only (no Address, MTU, DNS)."""
        lines = ["[Interface]", f"PrivateKey = {self.private_key}"]
        if self.listen_port is not None:
            lines.append(f"ListenPort = {self.listen_port}")
        lines += _peer_lines(self.peers)
        return "\n".join(lines) + "\n"


def _peer_lines(peers: tuple[Peer, ...]) -> list[str]:
    lines: list[str] = []
    for peer in peers:
        lines += ["", "[Peer]", f"PublicKey = {peer.public_key}"]
        if peer.preshared_key:
            lines.append(f"PresharedKey = {peer.preshared_key}")
        if peer.endpoint:
            lines.append(f"Endpoint = {peer.endpoint}")
        if peer.allowed_ips:
            lines.append("AllowedIPs = " + ", ".join(str(n) for n in peer.allowed_ips))
        if peer.persistent_keepalive is not None:
            lines.append(f"PersistentKeepalive = {peer.persistent_keepalive}")
    return lines


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _int(value: str, what: str, low: int, high: int) -> int:
    if not value.isdigit() or not low <= int(value) <= high:
        raise TunnelConfigError(f"{what} must be a whole number from {low} to {high}, not {value[:40]!r}")
    return int(value)


def _endpoint(value: str) -> str:
    match = _ENDPOINT.match(value)
    if not match or not 1 <= int(match["port"]) <= 65535:
        raise TunnelConfigError(f"Endpoint must be host:port, not {value[:80]!r}")
    if match["v6"]:
        try:
            ipaddress.IPv6Address(match["v6"])
        except ValueError:
            raise TunnelConfigError(f"Endpoint has a malformed IPv6 address: {value[:80]!r}") from None
    return value


def _networks(value: str) -> tuple[Network, ...]:
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in _split(value))
    except ValueError as exc:
        raise TunnelConfigError(f"AllowedIPs has a malformed network: {exc}") from None


def _addresses(value: str) -> tuple[Interface, ...]:
    try:
        found = tuple(ipaddress.ip_interface(item) for item in _split(value))
    except ValueError as exc:
        raise TunnelConfigError(f"Address is malformed: {exc}") from None
    if not found:
        raise TunnelConfigError("Address is empty")
    return found


def parse_config(text: str, source: str = "tunnel config") -> TunnelConfig:
    """A TunnelConfig from wg-quick-style text, or TunnelConfigError naming the line."""
    if not isinstance(text, str) or not text.strip():
        raise TunnelConfigError(f"{source} is empty")
    if len(text.encode()) > MAX_CONFIG_BYTES:
        raise TunnelConfigError(f"{source} is larger than {MAX_CONFIG_BYTES} bytes")
    interface: dict[str, str] | None = None
    peers: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            section = line.lower()
            if section == "[interface]":
                if interface is not None:
                    raise TunnelConfigError(f"{source} line {number}: a second [Interface] section")
                current = interface = {}
            elif section == "[peer]":
                current = {}
                peers.append(current)
            else:
                raise TunnelConfigError(f"{source} line {number}: unknown section {line[:40]!r}")
            continue
        if "=" not in line:
            raise TunnelConfigError(f"{source} line {number}: expected 'Key = value', got {line[:40]!r}")
        if current is None:
            raise TunnelConfigError(f"{source} line {number}: a key before any [Interface] or [Peer] section")
        key, value = (part.strip() for part in line.split("=", 1))
        name = key.lower()
        allowed = INTERFACE_KEYS if current is interface else PEER_KEYS
        if name in HOOK_KEYS:
            raise TunnelConfigError(f"{source} line {number}: {key} (a command to run as root) is refused")
        if name in IGNORED_KEYS and current is interface:
            log.info("tunnel config: %s ignored (routes are this site's own)", key)
            continue
        if name not in allowed:
            raise TunnelConfigError(f"{source} line {number}: unknown key {key[:40]!r}")
        if name in current:
            if name in ("address", "dns", "allowedips"):  # wg-quick allows these repeated
                current[name] += "," + value
                continue
            raise TunnelConfigError(f"{source} line {number}: {key} given twice")
        current[name] = value
    if interface is None:
        raise TunnelConfigError(f"{source} has no [Interface] section")
    if not peers:
        raise TunnelConfigError(f"{source} has no [Peer] section")
    if "privatekey" not in interface:
        raise TunnelConfigError(f"{source}: [Interface] has no PrivateKey")
    if "address" not in interface:
        raise TunnelConfigError(f"{source}: [Interface] has no Address")
    return TunnelConfig(
        private_key=validate_key(interface["privatekey"], f"{source}: PrivateKey"),
        addresses=_addresses(interface["address"]),
        peers=tuple(_peer(p, source) for p in peers),
        mtu=_int(interface["mtu"], "MTU", 576, 65535) if "mtu" in interface else None,
        listen_port=_int(interface["listenport"], "ListenPort", 1, 65535) if "listenport" in interface else None,
        dropped_dns=tuple(_split(interface.get("dns", ""))),
    )


def _peer(values: dict[str, str], source: str) -> Peer:
    if "publickey" not in values:
        raise TunnelConfigError(f"{source}: a [Peer] has no PublicKey")
    return Peer(
        public_key=validate_key(values["publickey"], f"{source}: peer PublicKey"),
        endpoint=_endpoint(values["endpoint"]) if "endpoint" in values else None,
        allowed_ips=_networks(values.get("allowedips", "")),
        persistent_keepalive=(
            _int(values["persistentkeepalive"], "PersistentKeepalive", 0, 65535) if "persistentkeepalive" in values else None
        ),
        preshared_key=(validate_key(values["presharedkey"], f"{source}: PresharedKey") if "presharedkey" in values else None),
    )


def check_vpn_network(network: Network) -> Network:
    """The pool's VPN network, if it is one a volunteer's machine can route to a tunnel
    without losing anything: private, and no wider than a /8 (IPv4) or /48 (IPv6)."""
    widest = 8 if network.version == 4 else 48
    if network.prefixlen < widest or not network.is_private:
        raise TunnelConfigError(f"VPN network {network} is not a private network of /{widest} or narrower; refusing to route it")
    return network


def narrow_allowed_ips(config: TunnelConfig, network: Network) -> TunnelConfig:
    """The config with each peer's AllowedIPs inside `network` only: an entry wider than it
    (0.0.0.0/0, ::/0 ...) or outside it is replaced by the network itself. Logged."""
    check_vpn_network(network)
    peers = []
    for peer in config.peers:
        kept = tuple(n for n in peer.allowed_ips if n.version == network.version and n.subnet_of(network))  # type: ignore[arg-type]
        dropped = [str(n) for n in peer.allowed_ips if n not in kept]
        if not kept:
            kept = (network,)
        if dropped:
            log.warning(
                "tunnel config: AllowedIPs %s narrowed to %s (only the pool's VPN network goes through the tunnel)",
                ", ".join(dropped),
                ", ".join(str(n) for n in kept),
            )
        peers.append(replace(peer, allowed_ips=kept))
    if config.dropped_dns:
        log.warning("tunnel config: DNS %s ignored (this site never changes the host's DNS)", ", ".join(config.dropped_dns))
    return replace(config, peers=tuple(peers), dropped_dns=())
