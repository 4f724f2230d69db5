"""The tunnel as the site uses it: config kept, join when there is none, up, handshake,
status, down. Shared by `hivemind vpn` and the bridge; reads the HIVEMIND_TUNNEL_*
settings."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hivemind_celery.core import Settings
from vpn.config import TunnelConfig
from vpn.errors import JoinError, TunnelError
from vpn.join import Joined, join_deployed, join_own
from vpn.link import WireGuardLink
from vpn.store import JoinRecord, TunnelStore
from vpn.tools import Tools

log = logging.getLogger(__name__)

PID_FILE = "wireguard-go.pid"


@dataclass(frozen=True)
class TunnelStatus:
    interface: str
    joined: bool
    up: bool
    address: str | None = None
    network: str | None = None
    pool_address: str | None = None
    endpoint: str | None = None
    mode: str | None = None
    handshake_age: float | None = None
    pool_generated_key: bool = False

    @property
    def healthy(self) -> bool:
        return self.up and self.handshake_age is not None


def default_client_name(settings: Settings) -> str:
    base = re.sub(r"[^A-Za-z0-9_-]", "-", settings.username or settings.worker_id).strip("-") or "hivemind"
    return base[:20]


class Tunnel:
    def __init__(
        self, settings: Settings, token: Callable[[], str] | None = None, tools: Tools | None = None, detach: bool = False
    ) -> None:
        self.settings = settings
        self.store = TunnelStore(settings.tunnel_state_dir)
        self._token = token  # the site's pool login, for joins to our own pool
        userspace = {"auto": None, "kernel": False, "userspace": True}[settings.tunnel_userspace]
        self.link = WireGuardLink(
            settings.tunnel_interface, tools, userspace=userspace, pid_file=self.store.dir / PID_FILE, detach=detach
        )
        self.client_name = settings.tunnel_client_name or default_client_name(settings)

    # -- join -------------------------------------------------------------------
    def join(self) -> Joined:
        """Ask the pool for a tunnel and keep the answer (replacing any kept one)."""
        url = self.settings.tunnel_join_url
        if not url:
            raise JoinError("HIVEMIND_TUNNEL_JOIN_URL is not set: the pool's POST /api/vpn/join URL")
        if self.settings.tunnel_join_mode == "deployed":
            joined = join_deployed(url, self.client_name)
        else:
            if self._token is None:
                raise JoinError("joining our own Node Pool needs the site's pool login (HIVEMIND_USERNAME/PASSWORD)")
            joined = join_own(url, self._token(), self.client_name, self.store.key_pair())
        self.store.save(joined.config, joined.record)
        log.info("tunnel config kept in %s (mode 0600)", self.store.dir)
        return joined

    def config(self) -> tuple[TunnelConfig, JoinRecord]:
        """The kept config, joining first when there is none."""
        if self.store.exists():
            return self.store.load()
        joined = self.join()
        return joined.config, joined.record

    # -- up / down -----------------------------------------------------------------
    def up(self) -> TunnelStatus:
        """Config (join if none), interface up, a handshake seen; TunnelError otherwise, with
        the interface removed again."""
        config, record = self.config()
        self.link.up(config, record.vpn_network)
        try:
            self.link.wait_handshake(self.settings.tunnel_handshake_timeout, config)
        except TunnelError:
            self.link.down()
            raise
        return self.status()

    def down(self) -> None:
        self.link.down()

    def status(self) -> TunnelStatus:
        name = self.link.name
        if not self.store.exists():
            return TunnelStatus(interface=name, joined=False, up=self.link.exists())
        config, record = self.store.load()
        is_up = self.link.exists()
        return TunnelStatus(
            interface=name,
            joined=True,
            up=is_up,
            address=str(config.address.ip),
            network=record.network,
            pool_address=record.pool_address,
            endpoint=record.endpoint,
            mode=record.mode,
            handshake_age=self.link.handshake_age() if is_up else None,
            pool_generated_key=record.pool_generated_key,
        )

    @property
    def state_dir(self) -> Path:
        return self.store.dir
