"""The console's listening socket: bound by `hivemind console` itself (so a taken
port is a clear error at once, whatever serves it later), then either served
in the same process (always on) or handed to the activator (on demand): `hand_over` execs into it.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from typing import NoReturn

from hivemind_celery.core import HivemindError

BACKLOG = 128  # connections that wait while a console starts


class ListenError(HivemindError, OSError):
    """The console's address cannot be listened on; the message says why."""


def shown(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port, inheritable (it outlives an exec).
    Bound as uvicorn binds (SO_REUSEADDR, IPv6 when the host has a colon)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ListenError(
                f"port {port} on {host} is taken (another console, or another program): stop it or choose --port"
            ) from None
        raise ListenError(f"cannot listen on {shown(host, port)}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def child_command(fd: int, host: str, idle_exit: float) -> list[str]:
    """The real console, serving on the inherited socket `fd`."""
    return [sys.executable, "-m", "hivemind.console", "--fd", str(fd), "--host", host, "--idle-exit", f"{idle_exit:g}"]


def hand_over(listener: socket.socket, host: str, idle_exit: float) -> NoReturn:
    """Replaces this process by the activator, which keeps `listener` (same fd, same
    pid: a supervisor still watches the right process)."""
    fd = listener.fileno()
    command = [sys.executable, "-m", "hivemind.console.activator", "--fd", str(fd), "--", *child_command(fd, host, idle_exit)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)
