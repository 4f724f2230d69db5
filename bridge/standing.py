"""The bridge's standing with the Node Pool, kept in Redis for the console's
Overview: the node id, the pool, the last status reported and when, and the
last failure (cleared by the next good beat). Writing it never fails a beat."""

from __future__ import annotations

import logging
import time
from typing import Any

from hivemind_celery.core import keys
from hivemind_celery.observability import redact

log = logging.getLogger(__name__)

STANDING_TTL = 3600  # a bridge gone for an hour leaves nothing behind


def publish(client: Any, node_id: str, pool: str, status: str | None = None, error: str = "",
            registered: bool = False) -> None:
    if client is None:
        return
    fields: dict[str, Any] = {"node_id": node_id, "pool": pool, "error": redact(error)[:300]}
    if status is not None:
        fields.update(status=status, last_beat=f"{time.time():.3f}")
    if registered:
        fields["registered_at"] = f"{time.time():.3f}"
    try:
        pipe = client.pipeline(transaction=False)
        pipe.hset(keys.bridge_status(), mapping=fields)
        pipe.expire(keys.bridge_status(), STANDING_TTL)
        pipe.execute()
    except Exception as exc:  # noqa: BLE001 - the console's view must never fail a beat
        log.debug("standing not stored: %s", exc)
