"""A task's output: each chunk goes to the caller as it comes, and only the
last `limit` bytes are kept in memory for the outcome."""

from __future__ import annotations

import logging
import threading

from hivemind_celery.runtime.base import OnOutput

log = logging.getLogger(__name__)


class LogTail:
    def __init__(self, limit: int, on_output: OnOutput | None = None, task_id: str = "") -> None:
        self.limit = limit
        self.total = 0  # bytes seen, kept or not
        self._buffer = bytearray()
        self._on_output = on_output
        self._task_id = task_id
        self._lock = threading.Lock()
        self._callback_failed = False

    def add(self, chunk: bytes) -> None:
        if not chunk:
            return
        with self._lock:
            self.total += len(chunk)
            self._buffer += chunk[-self.limit :]
            if len(self._buffer) > self.limit:
                del self._buffer[: len(self._buffer) - self.limit]
        if self._on_output is not None and not self._callback_failed:
            try:
                self._on_output(chunk)
            except Exception:  # a broken consumer must not end the task; say so once
                self._callback_failed = True
                log.exception("output callback failed; output is no longer forwarded", extra={"task_id": self._task_id})

    def note(self, text: str) -> None:
        """A line of our own in the output (e.g. which step starts)."""
        self.add(f"[hivemind] {text}\n".encode())

    def text(self) -> str:
        with self._lock:
            data = bytes(self._buffer)
        prefix = "" if self.total <= self.limit else f"[... {self.total - self.limit} earlier bytes dropped]\n"
        return prefix + data.decode("utf-8", errors="replace")
