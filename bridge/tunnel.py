"""The bridge on the WireGuard tunnel (HIVEMIND_TUNNEL=1), for a site behind a home router.

Before the bridge serves or registers: a tunnel config (joined once, kept 0600),
the interface up, a handshake seen. Then the bridge registers the tunnel address
as its hostname (what the pool dials), listens there and on loopback only, and
by default takes ExecuteTask only from the pool's tunnel address (our own pool
says it; for the deployed network, which does not, the VPN network).

While it runs, a keeper thread watches the handshake age: a dead tunnel is
brought back up, joined again if the pool no longer takes the kept config, and
when the address changed the bridge is told, to listen and register there. Tasks
keep running meanwhile; results wait in the outbox until the pool can be reached.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from hivemind_celery.core import Settings, keys
from vpn.errors import JoinError, TunnelError
from vpn.tunnel import Tunnel, TunnelStatus

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


def publish(client: Any, status: TunnelStatus | None, state: str) -> None:
    """The tunnel's state in the bridge's standing hash, for the console's Overview.
    Writing it never fails a check."""
    if client is None:
        return
    handshake_at = ""
    if status is not None and status.handshake_age is not None:
        handshake_at = f"{time.time() - status.handshake_age:.3f}"
    fields = {
        "tunnel": state,
        "tunnel_address": (status.address if status else None) or "",
        "tunnel_network": (status.network if status else None) or "",
        "tunnel_handshake_at": handshake_at,
    }
    try:
        client.hset(keys.bridge_status(), mapping=fields)
    except Exception as exc:  # noqa: BLE001 - the console's view must never fail the tunnel
        log.debug("tunnel standing not stored: %s", exc)


class BridgeTunnel:
    def __init__(self, settings: Settings, token: Callable[[], str], redis_client: Any = None) -> None:
        self.settings = settings
        self.redis = redis_client
        self.tunnel = Tunnel(settings, token=token)
        self.status: TunnelStatus | None = None
        self.on_address_change: Callable[[str], None] | None = None
        self.recoveries = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._metrics: Any = None  # the metrics HTTP server, when served

    # -- at start ---------------------------------------------------------------------
    def bring_up(self) -> TunnelStatus:
        """Up with a handshake (joining if no config is kept); an interface left from a
        previous run of this bridge is taken down first."""
        if self.tunnel.link.exists():
            log.info("tunnel %s left from an earlier run: bringing it up afresh", self.tunnel.link.name)
            self.tunnel.down()
        self.status = self.tunnel.up()
        publish(self.redis, self.status, "up")
        self._serve_metrics()
        log.info(
            "tunnel up: address %s in %s, pool at %s",
            self.status.address,
            self.status.network,
            self.status.pool_address or self.status.endpoint,
            extra={"node_id": self.settings.username},
        )
        return self.status

    def bridge_settings(self, settings: Settings) -> Settings:
        """The bridge's settings on the tunnel: advertised and bound to the tunnel address,
        callers limited to the pool's tunnel address unless the operator chose otherwise."""
        assert self.status is not None and self.status.address is not None
        callers = settings.bridge_allowed_callers or [self.status.pool_address or str(self.status.network)]
        update = {"advertise_host": self.status.address, "bridge_bind": self.status.address, "bridge_allowed_callers": callers}
        if settings.tunnel_nodepool_address:
            update["nodepool_address"] = settings.tunnel_nodepool_address
        return settings.model_copy(update=update)

    # -- while running ------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bridge-tunnel", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        self.tunnel.down()
        publish(self.redis, None, "down")
        if self._metrics is not None:
            self._metrics.shutdown()

    def _serve_metrics(self) -> None:
        """hivemind_tunnel_* on HIVEMIND_TUNNEL_METRICS_PORT (0: off), read at scrape time."""
        port = self.settings.tunnel_metrics_port
        if not port or self._metrics is not None:
            return
        # Imported here: a bridge without tunnel metrics loads no prometheus_client (test_faces).
        from prometheus_client import CollectorRegistry, start_http_server

        from vpn.metrics import TunnelCollector

        registry = CollectorRegistry()
        registry.register(TunnelCollector(self.tunnel.status))
        self._metrics, _ = start_http_server(port, addr=LOOPBACK, registry=registry)

    def check(self) -> None:
        """One look at the tunnel; brings a dead one back."""
        status = self.tunnel.status()
        age = status.handshake_age
        if status.up and age is not None and age <= self.settings.tunnel_max_handshake_age:
            self.status = status
            publish(self.redis, status, "up")
            return
        publish(self.redis, status, "recovering")
        log.warning(
            "tunnel %s is dead (%s); bringing it back",
            status.interface,
            "interface gone" if not status.up else f"latest handshake {age if age is None else round(age)}s",
            extra={"node_id": self.settings.username},
        )
        self.recover()

    def recover(self) -> None:
        before = self.status.address if self.status else None
        self.tunnel.down()
        try:
            status = self.tunnel.up()
        except JoinError:
            raise  # the pool would not even answer: nothing kept is dropped
        except TunnelError as exc:
            # The pool may have dropped this site's peer (a restart, a removed key): join again.
            log.warning(
                "tunnel did not come back with the kept config (%s); joining again",
                exc,
                extra={"node_id": self.settings.username},
            )
            self.tunnel.store.forget()
            status = self.tunnel.up()
        self.status = status
        publish(self.redis, status, "up")
        self.recoveries += 1
        log.info("tunnel back up: address %s", status.address, extra={"node_id": self.settings.username})
        if status.address != before and status.address and self.on_address_change is not None:
            self.on_address_change(status.address)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.tunnel_check_interval):
            try:
                self.check()
            except Exception as exc:  # noqa: BLE001 - keep watching; the next check tries again
                log.warning("tunnel check failed: %s", exc, extra={"node_id": self.settings.username})


def start_tunnel(bridge: Any) -> BridgeTunnel:
    """The tunnel of a starting bridge: up before it serves or registers; its settings and
    config then say the tunnel address. The join to our own pool logs in with the site's
    account over a channel of its own (the bridge's session starts later)."""
    from bridge.config import BridgeConfig
    from bridge.session import Session, open_channel

    def token() -> str:
        channel = open_channel(bridge.settings)
        try:
            return Session(bridge.settings, channel).token()
        finally:
            channel.close()

    keeper = BridgeTunnel(bridge.settings, token, bridge.redis)
    keeper.bring_up()
    bridge.settings = keeper.bridge_settings(bridge.settings)
    bridge.config = BridgeConfig.from_settings(bridge.settings)
    return keeper
