"""Following a running container: waiting for its end in a thread, and
streaming its output into the task's log tail (surviving log rotation under
a flood, and catching up when dockerd ends a follow early)."""

from __future__ import annotations

import logging
import threading
import time

from hivemind_celery.runtime.logtail import LogTail

log = logging.getLogger(__name__)


class Waiter(threading.Thread):
    """container.wait() in a thread, so the caller can poll stop and deadline."""

    def __init__(self, container) -> None:  # type: ignore[no-untyped-def]
        super().__init__(daemon=True, name=f"wait-{container.name}")
        self.container = container
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self.container.wait()
        except Exception:  # noqa: BLE001 - removed or daemon gone: inspect tells which
            pass
        finally:
            self.done.set()


# dockerd ends a follow with this line when the json-file log rotated under
# it (output faster than it is read, past log_max_size): follow again from now.
_ROTATED = b"Error grabbing logs:"
LAST_LINES = 200  # read directly when following fell behind a flood


class Follower(threading.Thread):
    """Streams the container's output into the tail until the container ends."""

    def __init__(self, container, tail: LogTail) -> None:  # type: ignore[no-untyped-def]
        super().__init__(daemon=True)
        self.container, self.tail = container, tail
        self.skipped = False  # some output was rotated away or left unread
        self.cancel = threading.Event()
        self.received = 0  # bytes forwarded from the follow stream
        self.recent = b""  # its last two chunks, to check the stream's end against
        self.last_chunk = b""

    def run(self) -> None:
        since = None
        while not self.cancel.is_set():
            rotated = False
            try:
                for chunk in self.container.logs(stream=True, follow=True, stdout=True, stderr=True, since=since):
                    if self.cancel.is_set():
                        return
                    if chunk.startswith(_ROTATED):
                        rotated = True
                        continue
                    self._forward(chunk)
            except Exception:  # noqa: BLE001 - the stream ends when the container goes
                if self.cancel.is_set() or not self._still_running():
                    return
                rotated = True  # a read failed mid-run (dockerd slow under load): follow again from now
            if not rotated:
                return
            self.skipped, since = True, time.time()

    def _still_running(self) -> bool:
        try:
            self.container.reload()
        except Exception:  # noqa: BLE001 - removed or daemon gone
            return False
        return bool(self.container.attrs.get("State", {}).get("Running"))

    def finish(self) -> None:
        """After the container ended: a follower still behind a flood is cut
        short and the last lines are read directly, so the tail ends with the
        task's real last output."""
        self.join(timeout=5)
        if not self.is_alive() and not self.skipped:
            self._catch_up()
            return
        self.cancel.set()
        self.join(timeout=5)
        self._add_last_lines()

    def _add_last_lines(self) -> None:
        self.tail.note("output came faster than it could be read; some was skipped; the last lines follow")
        try:
            self.tail.add(self.container.logs(stdout=True, stderr=True, tail=LAST_LINES))
        except Exception:  # noqa: BLE001 - the container may be gone already
            log.warning("could not read the last output lines", exc_info=True)

    def _forward(self, chunk: bytes) -> None:
        self.received += len(chunk)
        self.recent = self.last_chunk + chunk  # a log entry may come in two frames
        self.last_chunk = chunk
        self.tail.add(chunk)

    def _catch_up(self) -> None:
        """dockerd can end a follow stream before the last output of a container
        that exited quickly (seen with 20.10 under load). The last line tells:
        when the stream did not end with it, read the log again and forward
        what the stream missed."""
        try:
            last = self.container.logs(stdout=True, stderr=True, tail=1)
            if not last or self.recent.endswith(last):
                return
            everything = self.container.logs(stdout=True, stderr=True)
        except Exception:  # noqa: BLE001 - the container may be gone already
            return
        # Forward the rest only when the log lines up with what the stream gave;
        # when it does not (the log rotated meanwhile), the last lines at least.
        start = self.received - len(self.recent)
        if len(everything) > self.received and everything[start : self.received] == self.recent:
            self.tail.add(everything[self.received :])
            return
        self.skipped = True
        self._add_last_lines()
