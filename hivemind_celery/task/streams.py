"""A task's output as a capped Redis stream, written in batches.

The runtime hands over small chunks (often a line); writing each as its own
XADD would cost a round trip per line, so chunks are buffered and flushed at
most every `flush_interval` seconds or when `flush_bytes` pile up.
"""

from __future__ import annotations

import threading
import time
from typing import cast

import redis

from hivemind_celery.core import keys
from hivemind_celery.core.units import as_text

# What Redis keeps of one task's output: entries are at most FLUSH_BYTES and
# trimmed exactly, so a flood of gigabytes holds at most STREAM_MAX_BYTES (the
# bridge reads far faster than that fills; the Node Pool keeps only the latest).
FLUSH_BYTES = 64 * 1024
STREAM_MAX_BYTES = 16 * 1024 * 1024
STREAM_MAXLEN = STREAM_MAX_BYTES // FLUSH_BYTES
STREAM_TTL = 7 * 24 * 3600


class OutputStream:
    def __init__(
        self,
        client: redis.Redis,
        task_id: str,
        flush_interval: float = 0.5,
        flush_bytes: int = FLUSH_BYTES,
    ) -> None:
        self._redis = client
        self._key = keys.task_output(task_id)
        self._interval = flush_interval
        self._max = min(flush_bytes, FLUSH_BYTES)
        self._buffer: list[bytes] = []
        self._size = 0
        self._last_flush = time.monotonic()
        self._lock = threading.Lock()
        # Flushes what is buffered once the interval is up even if no more output
        # comes (a task that prints a line, then works quietly, shows that line).
        self._timer: threading.Timer | None = None

    def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        with self._lock:
            self._buffer.append(chunk)
            self._size += len(chunk)
            due = self._size >= self._max or time.monotonic() - self._last_flush >= self._interval
            if not due and self._timer is None:
                wait = max(0.0, self._interval - (time.monotonic() - self._last_flush))
                self._timer = threading.Timer(wait, self._flush_later)
                self._timer.daemon = True
                self._timer.start()
        if due:
            self.flush()

    def _flush_later(self) -> None:
        try:
            self.flush()
        except redis.RedisError:
            pass  # the next write or the final flush tries again

    def flush(self) -> None:
        # Under the lock to the end: a timer's flush and the caller's never interleave,
        # so the entries stay in output order.
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._last_flush = time.monotonic()
            if not self._buffer:
                return
            data = b"".join(self._buffer)
            self._buffer.clear()
            self._size = 0
            pipe = self._redis.pipeline(transaction=False)
            for start in range(0, len(data), self._max):
                piece = data[start : start + self._max]
                pipe.xadd(self._key, {"data": piece}, maxlen=STREAM_MAXLEN, approximate=False)
            pipe.expire(self._key, STREAM_TTL)
            pipe.execute()


def read_output(client: redis.Redis, task_id: str, after: str = "0-0", count: int = 100) -> tuple[str, bytes]:
    """New output after stream id `after`: (last id read, bytes)."""
    entries = client.xrange(keys.task_output(task_id), min=f"({after}", count=count)
    if not entries:
        return after, b""
    data = b"".join(cast(bytes, (fields or {}).get(b"data", b"")) for _, fields in entries)
    return as_text(entries[-1][0]), data


def output_tail(client: redis.Redis, task_id: str, max_bytes: int = 4000, entries: int = 8) -> str:
    """The end of the task's output as text: its last `entries` chunks, at most `max_bytes`."""
    found = client.xrevrange(keys.task_output(task_id), count=entries) or []
    data = b"".join(cast(bytes, (fields or {}).get(b"data", b"")) for _, fields in reversed(found))
    return data[-max_bytes:].decode(errors="replace")
