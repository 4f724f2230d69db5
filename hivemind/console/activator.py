"""The console's activator: it holds the console's listening socket and starts
the real console only when someone connects, as systemd's socket activation
does, but in any process manager (the demo, compose, systemd, a terminal).

`hivemind console` binds the port, then execs `python -m hivemind.console.activator
--fd N -- CHILD...` with the socket inherited, so nothing of the CLI stays in
memory. The activator waits until the socket is readable (a browser connected)
and starts CHILD (the console, `python -m hivemind.console --fd N ...`), which
serves on the same socket and exits by itself after a spell with no request. The
activator holds the socket all the while: a connection that arrives while a child
starts or stops waits in the listen backlog, none is refused.

A child that fails (a non-zero exit, or one within a second of its start) is
not started again at once: the next try waits 1 s, then 2, 4 ... up to a minute,
and a connection that comes meanwhile gets a 503 saying so instead of hanging.
SIGTERM or SIGINT stops the child (SIGTERM, then SIGKILL after a grace) and the
activator exits 0.

This module imports only the standard library, so the idle console costs a few
MiB (tests/console/test_console_ondemand.py checks what it loads).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

log = logging.getLogger("hivemind.console.activator")

STOP_GRACE_S = 10.0  # a child's graceful shutdown: its open requests finish
FIRST_RETRY_S = 1.0
MAX_RETRY_S = 60.0
SHORTEST_GOOD_RUN_S = 1.0  # a child gone sooner did not serve: a failure whatever its status
ANSWER_TIMEOUT_S = 0.5  # reading a request / writing the 503 while the console is down


class Backoff:
    """When the next child may start: at once after a good run, else after a delay
    doubling with each failure in a row (FIRST_RETRY_S .. MAX_RETRY_S)."""

    def __init__(self) -> None:
        self.failures = 0
        self.retry_at = 0.0

    def ended(self, failed: bool, now: float) -> float:
        """Records a child's end; returns the delay before the next may start."""
        if not failed:
            self.failures, self.retry_at = 0, now
            return 0.0
        self.failures += 1
        delay = min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** (self.failures - 1))
        self.retry_at = now + delay
        return delay

    def waiting(self, now: float) -> float:
        """Seconds left before a child may start (0: now)."""
        return max(0.0, self.retry_at - now)


def unavailable_reply(retry_after: float) -> bytes:
    seconds = max(1, round(retry_after))
    body = (
        f"The HiveMind console failed to start; its log says why. The next try is in {seconds} s: reload this page then.\n"
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Retry-After: {seconds}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return head + body


class Activator:
    def __init__(self, listener: socket.socket, command: Sequence[str]) -> None:
        self.listener = listener
        self.command = list(command)
        self.backoff = Backoff()
        self.child: subprocess.Popen[bytes] | None = None
        self.child_started = 0.0
        self.stop_signal: int | None = None
        self.children_started = 0

    # --- signals: handlers only note them; set_wakeup_fd wakes the selector ----
    def _note_signal(self, signum: int, _frame: object) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.stop_signal = signum

    def run(self) -> int:
        wake_read, wake_write = socket.socketpair()
        wake_read.setblocking(False)
        wake_write.setblocking(False)
        previous_wakeup = signal.set_wakeup_fd(wake_write.fileno())
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(signum, self._note_signal)
        self.listener.setblocking(False)
        selector = selectors.DefaultSelector()
        selector.register(wake_read, selectors.EVENT_READ)
        log.info(
            "holding the console's port; the console starts at the first connection",
            extra={"listen": _address(self.listener), "pid": os.getpid()},
        )
        try:
            while self.stop_signal is None:
                self._reap()
                watching = self.child is None
                if watching:
                    selector.register(self.listener, selectors.EVENT_READ)
                try:
                    events = selector.select(timeout=None)
                finally:
                    if watching:
                        selector.unregister(self.listener)
                for key, _ in events:
                    if key.fileobj is wake_read:
                        _drain(wake_read)
                if self.stop_signal is None and watching and any(key.fileobj is self.listener for key, _ in events):
                    self._connection_waiting()
            self._stop_child()
        finally:
            selector.close()
            signal.set_wakeup_fd(previous_wakeup)
            wake_read.close()
            wake_write.close()
        log.info("stopped", extra={"signal": signal.Signals(self.stop_signal or signal.SIGTERM).name})
        return 0

    def _connection_waiting(self) -> None:
        left = self.backoff.waiting(time.monotonic())
        if left > 0:
            self._answer_unavailable(left)
            return
        self.child_started = time.monotonic()
        try:
            self.child = subprocess.Popen(self.command, pass_fds=(self.listener.fileno(),))
        except OSError as exc:
            delay = self.backoff.ended(True, time.monotonic())
            log.error(
                "cannot start the console: %s; the next try in %.0f s",
                exc,
                delay,
                extra={"command": " ".join(self.command)},
            )
            self._answer_unavailable(delay)
            return
        self.children_started += 1
        log.info("a connection: starting the console", extra={"child_pid": self.child.pid})

    def _reap(self) -> None:
        if self.child is None:
            return
        code = self.child.poll()
        if code is None:
            return
        now = time.monotonic()
        lived = now - self.child_started
        failed = code != 0 or lived < SHORTEST_GOOD_RUN_S
        pid = self.child.pid
        self.child = None
        delay = self.backoff.ended(failed, now)
        status = f"signal {signal.Signals(-code).name}" if code < 0 else f"status {code}"
        if failed:
            log.error(
                "the console exited with %s %.1f s after its start (see its output above); "
                "connections get a 503 for %.0f s, then the next one starts it again",
                status,
                lived,
                delay,
                extra={"child_pid": pid, "failures_in_a_row": self.backoff.failures},
            )
        else:
            log.info(
                "the console exited (idle); holding the port until the next connection",
                extra={"child_pid": pid, "ran_s": round(lived, 1)},
            )

    def _answer_unavailable(self, retry_after: float) -> None:
        """Answers every connection waiting in the backlog with a 503: while the
        console cannot start, a browser is told so instead of hanging."""
        reply = unavailable_reply(retry_after)
        while True:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. the client already gave up (ECONNABORTED)
                log.warning("accepting a connection to answer 503 failed: %s", exc)
                return
            with conn:
                conn.settimeout(ANSWER_TIMEOUT_S)
                try:
                    conn.recv(65536)  # the request, so closing does not reset the connection
                    conn.sendall(reply)
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass  # a client that does not read its answer gets none

    def _stop_child(self) -> None:
        child = self.child
        if child is None or child.poll() is not None:
            return
        child.terminate()
        try:
            child.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            log.warning("the console did not stop within %.0f s: killed", STOP_GRACE_S, extra={"child_pid": child.pid})
            child.kill()
            child.wait()


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(4096):
            pass
    except (BlockingIOError, InterruptedError):
        pass


def _address(sock: socket.socket) -> str:
    try:
        host, port = sock.getsockname()[:2]
    except (OSError, ValueError):
        return "?"
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


# The activator cannot use hivemind_celery's logging set-up (it would load
# pydantic); these two write the same shapes (HIVEMIND_LOG_JSON), without secrets
# to mask: the activator logs pids, statuses and addresses only.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + "+00:00",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **_extras(record),
        }
        return json.dumps(entry, default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        return f"{line} {extras}" if extras else line


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("HIVEMIND_LOG_JSON", "").strip().lower() in ("1", "true", "yes", "on"):
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def listening_socket(fd: int) -> socket.socket:
    """The inherited socket; a clear error when fd is not a listening TCP socket."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise SystemExit(f"error: fd {fd} is not an open socket ({exc.strerror})") from None
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise SystemExit(f"error: fd {fd} is not a listening stream socket")
    return sock


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hivemind.console.activator",
        description="Hold the console's listening socket (fd) and run COMMAND while someone uses it.",
    )
    parser.add_argument("--fd", type=int, required=True, help="the inherited listening socket")
    parser.add_argument("command", nargs="+", help="the console to start (after --); it gets the same fd")
    args = parser.parse_args(argv)
    _configure_logging()
    return Activator(listening_socket(args.fd), args.command).run()


if __name__ == "__main__":
    sys.exit(main())
