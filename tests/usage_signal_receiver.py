"""A receiver of every HiveMind custom signal, loaded into a real test worker
with `celery worker --include tests.usage_signal_receiver`.

It connects at import time, in the worker's main process before the pool
forks, so the pool children (where the signals fire) have it too. Each call is
appended as JSON to the Redis list `signal_key(<signal name>)` on the worker's
own Redis (REDIS_URL), with the receiving process's pid and parent pid, so a
test can check what arrived and where.
"""

from __future__ import annotations

import json
import os
from typing import Any

import redis

from hivemind_celery.core.settings import get_settings
from hivemind_celery.observability.signals import ALL_SIGNALS

_clients: dict[int, redis.Redis] = {}


def signal_key(signal_name: str) -> str:
    return f"test:signal:{signal_name}"


def _client() -> redis.Redis:
    # One client per process: a connection must not be shared across fork.
    pid = os.getpid()
    if pid not in _clients:
        _clients[pid] = redis.Redis.from_url(get_settings().redis_url)
    return _clients[pid]


def record(sender: Any, signal: Any = None, **kwargs: Any) -> None:
    entry = {"sender": sender, "pid": os.getpid(), "ppid": os.getppid(), "kwargs": kwargs}
    _client().rpush(signal_key(signal.name), json.dumps(entry, default=str))


for _signal in ALL_SIGNALS:
    _signal.connect(record, weak=False)
