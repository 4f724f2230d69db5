"""Child processes of the demo: each in its own process group (a new session),
its output in a log file, stopped politely first and by force after a grace.

A new session per child means a Ctrl-C in the terminal reaches only the demo,
which then stops the children in order (workers before Redis) instead of all
of them dying at once.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from hivemind_celery.core import HivemindError


class ChildFailed(HivemindError, RuntimeError):
    """A child exited or never became ready; the message carries its log tail."""


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(default: int, taken: set[int] | None = None) -> int:
    """The default port when it is free, else one the kernel says is free."""
    taken = taken or set()
    if default not in taken and port_free(default):
        return default
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in taken:
            return port


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_group(pid: int, grace: float, polite: tuple[int, ...] = (signal.SIGTERM,)) -> None:
    """Stop the process group led by `pid`: each polite signal to the leader in
    turn, waiting up to `grace` seconds after each, then SIGKILL to the group.

    Only the leader gets the polite signals: a Celery worker stops its own pool
    children; signalling them directly would count as lost tasks."""
    for sig in polite:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        if _wait_gone(pid, grace):
            break
    _signal_group(pid, signal.SIGKILL)
    _wait_group_gone(pid, 5.0)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return True
        except ChildProcessError:  # not our child (a site from an earlier run)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
        time.sleep(0.1)
    return False


def _wait_group_gone(pgid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while group_alive(pgid) and time.monotonic() < deadline:
        try:
            os.waitpid(pgid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log: Path
    grace: float
    polite: tuple[int, ...]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def failure(self, what: str) -> ChildFailed:
        return ChildFailed(f"{self.name} {what} (log: {self.log}):\n{log_tail(self.log)}")


@dataclass
class Supervisor:
    """Starts children and stops them all, last started first."""

    log_dir: Path
    children: list[Child] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        cwd: Path,
        grace: float = 10.0,
        polite: tuple[int, ...] = (signal.SIGTERM,),
    ) -> Child:
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log_file:
            log_file.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {name} =====\n".encode())
            log_file.flush()
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        child = Child(name, proc, log_path, grace, polite)
        self.children.append(child)
        return child

    def check(self) -> None:
        """Raise ChildFailed if any child has exited."""
        for child in self.children:
            if not child.alive():
                raise child.failure(f"exited with status {child.proc.returncode}")

    def stop_all(self, on_stop=None) -> None:
        while self.children:
            child = self.children.pop()
            if on_stop is not None:
                on_stop(child.name)
            stop_group(child.pid, child.grace, child.polite)
            if child.proc.poll() is None:
                child.proc.wait(5)
