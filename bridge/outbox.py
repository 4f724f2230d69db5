"""What the bridge owes the Node Pool, kept in Redis so a restarted bridge
resumes: the tasks it accepted and has not delivered a result for, and how
far into each task's output stream it has sent.

Delivery is at least once: an entry goes only after the pool acknowledged the
result, so a crash in between sends the result again (the pool deduplicates).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import redis

from hivemind_celery.core import as_text, keys


@dataclass(frozen=True)
class OwedTask:
    task_id: str
    queue: str
    cpus: float
    memory_mb: int
    gpus: int
    gpu_memory_mb: int
    accepted_at: float

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> OwedTask:
        data: dict[str, Any] = json.loads(raw)
        return cls(**data)


class Outbox:
    def __init__(self, client: redis.Redis, node_id: str) -> None:
        self._redis = client
        self._owed = keys.bridge_owed(node_id)
        self._cursor = keys.bridge_cursor(node_id)
        self.node_id = node_id

    def add(self, task: OwedTask, client: Any = None) -> bool:
        """Record an accepted task; False if it was already owed. With `client` (a
        pipeline) the command is only queued there and the answer comes from its execute()."""
        return bool((client or self._redis).hsetnx(self._owed, task.task_id, task.to_json()))

    def get(self, task_id: str) -> OwedTask | None:
        raw = self._redis.hget(self._owed, task_id)
        return OwedTask.from_json(raw) if raw else None

    def owes(self, task_id: str) -> bool:
        return bool(self._redis.hexists(self._owed, task_id))

    def all(self) -> list[OwedTask]:
        return [OwedTask.from_json(raw) for raw in self._redis.hvals(self._owed)]

    def count(self) -> int:
        return int(self._redis.hlen(self._owed))

    def cursor(self, task_id: str) -> str:
        raw = self._redis.hget(self._cursor, task_id)
        return as_text(raw) if raw else "0-0"

    def cursors(self) -> dict[str, str]:
        return {as_text(k): as_text(v) for k, v in self._redis.hgetall(self._cursor).items()}

    def advance(self, task_id: str, stream_id: str) -> None:
        self._redis.hset(self._cursor, task_id, stream_id)

    def remove(self, task_id: str) -> None:
        pipe = self._redis.pipeline()
        pipe.hdel(self._owed, task_id)
        pipe.hdel(self._cursor, task_id)
        pipe.execute()
