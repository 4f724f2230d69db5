"""Which tasks run on this site now, and which ended lately (for the console).

`hm:site:running` maps task id -> start time and `hm:site:history` maps task
id -> end time (capped at HISTORY_MAX); `hm:task:<id>:info` keeps what the
console shows of the task (worker, cpus, memory, image), and `usage(task_id)`
reads a running task's latest sample (written by task/observers.py's
UsageKeyObserver). The outcome itself
stays where the task guard keeps it (keys.task_outcome). A worker that dies
leaves an entry in `running`: `running()` drops those whose task lock is gone.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import redis

from hivemind_celery.core import keys

HISTORY_MAX = 500
INFO_TTL = 7 * 24 * 3600


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Activity:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def started(self, task_id: str, info: dict[str, Any]) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(keys.site_running(), {task_id: time.time()})
        pipe.set(keys.task_info(task_id), json.dumps(info), ex=INFO_TTL)
        pipe.execute()

    def finished(self, task_id: str, reward: int = 0) -> None:
        pipe = self.client.pipeline(transaction=False)
        if reward:
            day = datetime.now(UTC).strftime("%Y-%m-%d")
            pipe.hincrby(keys.site_earned(), "total", int(reward))
            pipe.hincrby(keys.site_earned(), f"day:{day}", int(reward))
        pipe.zrem(keys.site_running(), task_id)
        pipe.zadd(keys.site_history(), {task_id: time.time()})
        pipe.zremrangebyrank(keys.site_history(), 0, -HISTORY_MAX - 1)
        pipe.execute()

    def earned(self) -> tuple[int, int]:
        """CPT earned (today UTC, in all)."""
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        today, total = self.client.hmget(keys.site_earned(), f"day:{day}", "total")
        return int(today or 0), int(total or 0)

    def info(self, task_id: str) -> dict[str, Any]:
        raw = self.client.get(keys.task_info(task_id))
        try:
            value = json.loads(raw) if raw else {}
        except ValueError:
            value = {}
        return value if isinstance(value, dict) else {}

    def usage(self, task_id: str) -> dict[str, Any]:
        """The running task's latest usage sample; {} when none (not sampled yet, or ended)."""
        raw = self.client.get(keys.task_usage(task_id))
        try:
            value = json.loads(raw) if raw else {}
        except ValueError:
            value = {}
        return value if isinstance(value, dict) else {}

    def running(self) -> list[tuple[str, float]]:
        """(task id, start time), oldest first; entries of a dead run are dropped."""
        found: Any = self.client.zrange(keys.site_running(), 0, -1, withscores=True)
        entries = [(_text(t), float(s)) for t, s in found]
        if not entries:
            return []
        pipe = self.client.pipeline(transaction=False)
        for task_id, _ in entries:
            pipe.exists(keys.task_lock(task_id))
        alive = pipe.execute()
        gone = [task_id for (task_id, _), live in zip(entries, alive) if not live]
        if gone:
            self.client.zrem(keys.site_running(), *gone)
        return [entry for entry, live in zip(entries, alive) if live]

    def history(self, limit: int = 100) -> list[tuple[str, float]]:
        """(task id, end time), newest first."""
        found: Any = self.client.zrevrange(keys.site_history(), 0, limit - 1, withscores=True)
        return [(_text(t), float(s)) for t, s in found]
