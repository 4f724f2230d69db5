"""Prometheus metrics of the tunnel, read at scrape time (`wg show` and the kept config)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from vpn.errors import TunnelError

log = logging.getLogger(__name__)


class TunnelCollector(Collector):
    """hivemind_tunnel_up, hivemind_tunnel_handshake_age_seconds, hivemind_tunnel (info)."""

    def __init__(self, status: Callable[[], object]) -> None:
        self.status = status  # Tunnel.status, or the bridge keeper's last status

    def collect(self) -> Iterator[Metric]:
        try:
            status = self.status()
        except (TunnelError, OSError) as exc:
            log.warning("tunnel metrics: cannot read the tunnel: %s", exc)
            status = None
        up = GaugeMetricFamily("hivemind_tunnel_up", "1 when the tunnel interface is up and has had a handshake.")
        up.add_metric([], 1.0 if status is not None and getattr(status, "healthy", False) else 0.0)
        yield up
        age = GaugeMetricFamily(
            "hivemind_tunnel_handshake_age_seconds", "Seconds since the tunnel's latest WireGuard handshake (absent: none yet)."
        )
        if status is not None and getattr(status, "handshake_age", None) is not None:
            age.add_metric([], float(status.handshake_age))  # type: ignore[attr-defined]
        yield age
        if status is not None:
            info = InfoMetricFamily("hivemind_tunnel", "The tunnel's interface, address, VPN network and join mode.")
            info.add_metric(
                [], {key: str(getattr(status, key) or "") for key in ("interface", "address", "network", "pool_address", "mode")}
            )
            yield info
