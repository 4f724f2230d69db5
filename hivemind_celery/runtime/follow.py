"""Following a running container: waiting for its end in a thread, and
streaming its output into the task's log tail (surviving log rotation under
a flood, and catching up when dockerd ends a follow early)."""

from __future__ import annotations

import io
import logging
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import requests
from docker.errors import create_api_error_from_http_exception

from hivemind_celery.runtime.logtail import LogTail

log = logging.getLogger(__name__)

# The Engine API's framing of a container's output when it has no TTY (the
# worker never gives one): per frame, the stream (1 byte), 3 zero bytes and
# the payload's size (big-endian uint32), then the payload.
_FRAME_HEADER = struct.Struct(">BxxxL")


def container_logs(container: Any, follow: bool = False, tail: int | str = "all", since: float | None = None) -> Any:
    """The container's stdout and stderr as `container.logs` gives them: all
    of it as bytes, or with `follow` an iterator of chunks until the container
    ends. Asked of the Engine API directly: the docker SDK inspects the
    container before every logs call to learn whether it has a TTY, one more
    round trip to dockerd, mostly on the path that ends a task."""
    api = container.client.api
    params: dict[str, Any] = {"stdout": 1, "stderr": 1, "timestamps": 0, "follow": int(follow), "tail": tail}
    if since is not None:
        params["since"] = since
    url = f"{api.base_url}/v{api.api_version}/containers/{container.id}/logs"
    # A follow stream is quiet as long as the task prints nothing: no read timeout.
    response = api.get(url, params=params, stream=follow, timeout=(api.timeout, None) if follow else api.timeout)
    try:
        response.raise_for_status()
    except requests.exceptions.HTTPError as exc:
        response.close()
        raise create_api_error_from_http_exception(exc) from exc
    if follow:
        return _streamed_frames(response)
    return b"".join(_frames(io.BytesIO(response.content)))


def _streamed_frames(response: requests.Response) -> Iterator[bytes]:
    try:
        yield from _frames(response.raw)
    finally:
        response.close()


def _frames(raw: Any) -> Iterator[bytes]:
    while True:
        header = raw.read(_FRAME_HEADER.size)
        if len(header) < _FRAME_HEADER.size:
            return
        _, size = _FRAME_HEADER.unpack(header)
        if not size:
            continue
        data = raw.read(size)
        if not data:
            return
        yield data


class Waiter(threading.Thread):
    """container.wait() in a thread, so the caller can poll stop and deadline;
    then the ended container's state, read while the caller reads its last output."""

    def __init__(self, container) -> None:  # type: ignore[no-untyped-def]
        super().__init__(daemon=True, name=f"wait-{container.name}")
        self.container = container
        self.done = threading.Event()
        self.inspected = threading.Event()
        self.state: dict | None = None  # the State of the container's inspect, once ended

    def run(self) -> None:
        try:
            self.container.wait()
        except Exception:  # noqa: BLE001 - removed or daemon gone: inspect tells which
            pass
        finally:
            self.done.set()
        try:
            # Into a field of our own, not container.attrs, which another thread's
            # earlier inspect (of the running container) may still overwrite.
            self.state = self.container.client.api.inspect_container(self.container.id).get("State") or {}
        except Exception:  # noqa: BLE001 - removed or daemon gone: the caller's own inspect tells which
            self.state = None
        finally:
            self.inspected.set()

    def ended_state(self, timeout: float) -> dict | None:
        """The state read after the end, or None when the container has not ended."""
        if self.done.is_set() and self.inspected.wait(timeout):
            return self.state
        return None


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
                for chunk in container_logs(self.container, follow=True, since=since):
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
            self.tail.add(container_logs(self.container, tail=LAST_LINES))
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
            last = container_logs(self.container, tail=1)
            if not last or self.recent.endswith(last):
                return
            everything = container_logs(self.container)
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
