"""Bounded time series in Redis for the contributor's console.

A series is a Redis list of JSON points (each with a unix `t`), appended at
the tail, trimmed to `max_points` and expiring `ttl` seconds after the last
write; a read drops points older than `max_age`. One list per running task
(its usage samples) and one per worker host (the host snapshot every few
seconds), so nothing grows without bound whatever runs.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from hivemind_celery.core import keys

# A task sampled every 2 s keeps its whole life up to ~2 h; the host keeps the last hour.
TASK_MAX_POINTS = 3600
HOST_MAX_POINTS = 1800
HOST_MAX_AGE = 3600.0
# A finished task's series stays this long for the console's history.
TASK_TTL = 24 * 3600
HOST_TTL = 2 * 3600


class SeriesStore:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def append(self, key: str, point: dict[str, Any], max_points: int, ttl: int) -> None:
        point = {"t": time.time(), **point}
        pipe = self.client.pipeline(transaction=False)
        pipe.rpush(key, json.dumps(point, separators=(",", ":")))
        pipe.ltrim(key, -max_points, -1)
        pipe.expire(key, ttl)
        pipe.execute()

    def read(self, key: str, max_age: float | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        raw = self.client.lrange(key, -limit if limit else 0, -1)
        points = []
        for item in raw:
            try:
                point = json.loads(item)
            except ValueError:
                continue  # a damaged entry drops out of the chart, not the page
            if isinstance(point, dict) and isinstance(point.get("t"), int | float):
                points.append(point)
        if max_age is not None:
            since = time.time() - max_age
            points = [p for p in points if p["t"] >= since]
        return points

    # -- the two kinds the site keeps -------------------------------------------
    def add_task_sample(self, task_id: str, point: dict[str, Any]) -> None:
        self.append(keys.task_series(task_id), point, TASK_MAX_POINTS, TASK_TTL)

    def task(self, task_id: str) -> list[dict[str, Any]]:
        return self.read(keys.task_series(task_id))

    def add_host_sample(self, worker_id: str, point: dict[str, Any]) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(keys.host_series_index(), {worker_id: time.time()})
        pipe.execute()
        self.append(keys.host_series(worker_id), point, HOST_MAX_POINTS, HOST_TTL)

    def hosts(self) -> list[str]:
        """Workers that sent a host sample within the last hour, newest first."""
        since = time.time() - HOST_MAX_AGE
        self.client.zremrangebyscore(keys.host_series_index(), "-inf", since)
        found: Any = self.client.zrevrange(keys.host_series_index(), 0, -1)
        return [w.decode() if isinstance(w, bytes) else str(w) for w in found]

    def host(self, worker_id: str) -> list[dict[str, Any]]:
        return self.read(keys.host_series(worker_id), max_age=HOST_MAX_AGE)
