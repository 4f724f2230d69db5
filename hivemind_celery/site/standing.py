"""The bridge's standing with the Node Pool, kept in Redis: the bridge publishes
it at every beat (`publish_standing`), the console reads it (`read_standing`).

It holds the node id, the pool, the last status reported and when, and the
last failure (cleared by the next good beat). Publishing never fails a beat;
a bridge gone for STANDING_TTL leaves nothing behind.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import redis

from hivemind_celery.core import keys
from hivemind_celery.core.units import as_text
from hivemind_celery.observability.logs import redact

log = logging.getLogger(__name__)

STANDING_TTL = 3600
MISSED_BEATS = 3  # a bridge silent this many beats no longer counts as joined
MIN_BEAT_S = 5.0  # a beat interval below this is judged as this (a fast test bridge is not "gone" at 1 s)


@dataclass(frozen=True)
class Standing:
    """What the bridge last published (its times: this host's clock, unix seconds)."""

    node_id: str
    pool: str
    status: str
    error: str
    last_beat: float | None
    tunnel: str = ""  # up, recovering or down (bridge/tunnel.py); empty: the site uses no tunnel
    tunnel_address: str = ""
    tunnel_network: str = ""
    tunnel_handshake_at: float | None = None

    def joined(self, heartbeat_interval: float, now: float | None = None) -> bool:
        """Is the site in the pool now: a status reported within MISSED_BEATS
        beats (of HIVEMIND_HEARTBEAT_INTERVAL) and no failure since?"""
        if not self.last_beat or self.error:
            return False
        now = time.time() if now is None else now
        return now - self.last_beat < MISSED_BEATS * max(heartbeat_interval, MIN_BEAT_S)


def publish_standing(client: Any, node_id: str, pool: str, status: str | None = None, error: str = "") -> None:
    """Store a beat's outcome: a status reported, or the failure that stopped it."""
    if client is None:
        return
    fields: dict[str, Any] = {"node_id": node_id, "pool": pool, "error": redact(error)[:300]}
    if status is not None:
        fields.update(status=status, last_beat=f"{time.time():.3f}")
    try:
        pipe = client.pipeline(transaction=False)
        pipe.hset(keys.bridge_status(), mapping=fields)
        pipe.expire(keys.bridge_status(), STANDING_TTL)
        pipe.execute()
    except Exception as exc:  # noqa: BLE001 - the console's view must never fail a beat
        log.debug("standing not stored: %s", exc)


def read_standing(client: redis.Redis) -> Standing:
    """The bridge's last standing; all empty (never joined) when no bridge published one lately."""
    stored = {as_text(k): as_text(v) for k, v in client.hgetall(keys.bridge_status()).items()}
    return Standing(
        node_id=stored.get("node_id", ""),
        pool=stored.get("pool", ""),
        status=stored.get("status", ""),
        error=stored.get("error", ""),
        last_beat=_unix_time(stored.get("last_beat")),
        tunnel=stored.get("tunnel", ""),
        tunnel_address=stored.get("tunnel_address", ""),
        tunnel_network=stored.get("tunnel_network", ""),
        tunnel_handshake_at=_unix_time(stored.get("tunnel_handshake_at")),
    )


def _unix_time(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None
