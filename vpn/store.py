"""The tunnel's files in the site's state directory, all mode 0600 (the directory 0700):

- `tunnel.conf`: the config as brought up (narrowed, without DNS), wg-quick's format;
- `tunnel.json`: what the join said besides the config (mode, VPN network, the pool's
  tunnel address, when it was joined), read by `status` and the bridge;
- `private.key`: this site's own private key, made before a join to our own pool, so a
  retried join asks for the same key's tunnel.

Written to a temporary file and renamed, so a crash never leaves half a config."""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from vpn.config import Network, TunnelConfig, check_vpn_network, parse_config
from vpn.errors import TunnelConfigError
from vpn.keys import KeyPair, generate_key_pair, public_key_of, validate_key

CONFIG_FILE = "tunnel.conf"
META_FILE = "tunnel.json"
KEY_FILE = "private.key"


@dataclass(frozen=True)
class JoinRecord:
    mode: str  # "own" or "deployed"
    network: str  # the pool's VPN network, e.g. 10.0.0.0/24
    pool_address: str | None  # the pool's own tunnel address, when the join said it
    endpoint: str  # the pool's WireGuard endpoint host:port
    joined_at: str  # ISO time
    client_name: str = ""
    pool_generated_key: bool = False  # the deployed network makes the private key itself

    @property
    def vpn_network(self) -> Network:
        return check_vpn_network(ipaddress.ip_network(self.network, strict=False))


class TunnelStore:
    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(state_dir).expanduser()

    def _ensure_dir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        owner = self.dir.stat().st_uid
        if owner != os.geteuid():
            # Another user could replace the config or read the keys there.
            raise TunnelConfigError(
                f"tunnel state directory {self.dir} belongs to uid {owner}, not this user "
                f"(uid {os.geteuid()}): keep the tunnel's keys in a directory of its own"
            )
        os.chmod(self.dir, 0o700)

    def _write(self, name: str, text: str) -> None:
        self._ensure_dir()
        tmp = self.dir / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.dir / name)

    # -- the config and its join record ------------------------------------------
    def exists(self) -> bool:
        return (self.dir / CONFIG_FILE).is_file() and (self.dir / META_FILE).is_file()

    def save(self, config: TunnelConfig, record: JoinRecord) -> None:
        self._write(CONFIG_FILE, config.render())
        self._write(META_FILE, json.dumps(asdict(record), indent=2) + "\n")

    def load(self) -> tuple[TunnelConfig, JoinRecord]:
        path = self.dir / CONFIG_FILE
        config = parse_config(path.read_text(), str(path))
        try:
            record = JoinRecord(**json.loads((self.dir / META_FILE).read_text()))
        except (ValueError, TypeError) as exc:
            raise TunnelConfigError(f"{self.dir / META_FILE} is malformed: {exc}") from None
        return config, record

    def forget(self) -> None:
        """Drop the config and record (a re-join follows); the own private key stays."""
        for name in (CONFIG_FILE, META_FILE):
            (self.dir / name).unlink(missing_ok=True)

    # -- this site's own key pair (joins to our own pool) ----------------------------
    def key_pair(self) -> KeyPair:
        """The kept key pair, made and kept on first use."""
        path = self.dir / KEY_FILE
        if path.is_file():
            private = validate_key(path.read_text().strip(), str(path))
            return KeyPair(private, public_key_of(private))
        pair = generate_key_pair()
        self._write(KEY_FILE, pair.private_key + "\n")
        return pair
