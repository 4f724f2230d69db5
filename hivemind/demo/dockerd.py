"""Docker for the demo: which daemon DOCKER_HOST names, whether it answers, and
starting it when it is installed but not running and we may (root, or sudo),
as scripts/with-services.sh does for the tests; the demo stops what it started.

The default socket (/var/run/docker.sock) gets a plain `dockerd`: the machine's
own daemon with its usual data, so the images it builds stay for later runs.
Any other unix socket gets a daemon of its own: its own data root (under the
demo's folder), exec root, pidfile and bridge, with iptables left alone, so it
cannot disturb a daemon already running here (a second daemon on docker0 would
hand out the first one's addresses; `--bridge none` deletes docker0). Tasks'
set-up steps on such a daemon have no route to the internet.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hivemind.demo.procs import Child, Supervisor
from hivemind.demo.services import wait_until

DEFAULT_SOCKET = Path("/var/run/docker.sock")
BRIDGE_PREFIX = "hm-demo-"  # bridges of the demo's own daemons; deleted when it stops
OWN_SUBNETS = "10.234.{}.0/24"  # where an own daemon's bridge takes its /24
START_TIMEOUT = 90.0
STOP_GRACE = 40.0  # dockerd waits up to 15 s for containers, then its own shutdown


@dataclass(frozen=True)
class DockerHost:
    url: str
    socket: Path | None  # None: not a unix socket (tcp://, ssh://), never started by us

    @property
    def default(self) -> bool:
        return self.socket is not None and _same_socket(self.socket, DEFAULT_SOCKET)

    @property
    def key(self) -> str:
        """Short and stable per socket: names its bridge and exec root."""
        return hashlib.sha1(self.url.encode()).hexdigest()[:6]


def _same_socket(a: Path, b: Path) -> bool:
    # /var/run is usually a link to /run: compare the real folders.
    return a.name == b.name and os.path.realpath(a.parent) == os.path.realpath(b.parent)


def docker_host(environ: Mapping[str, str] | None = None) -> DockerHost:
    env: Mapping[str, str] = os.environ if environ is None else environ
    url = env.get("DOCKER_HOST", "").strip() or f"unix://{DEFAULT_SOCKET}"
    if url.startswith("unix://"):
        return DockerHost(url, Path(url[len("unix://") :]))
    return DockerHost(url, None)


def client(host: DockerHost, timeout: int = 30):  # type: ignore[no-untyped-def]
    """A Docker SDK client for `host` (TLS settings from the environment, as the workers get them)."""
    import docker

    return docker.from_env(timeout=timeout, environment={**os.environ, "DOCKER_HOST": host.url})


def ping_problem(host: DockerHost) -> str | None:
    """None when the daemon at `host` answers, else why not (one line)."""
    try:
        client_ = client(host, timeout=10)
        try:
            client_.ping()
        finally:
            client_.close()
    except Exception as exc:  # noqa: BLE001 - any failure means no usable dockerd
        return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return None


def socket_state(path: Path) -> str:
    """ "absent", "refused" (a file nobody serves), "denied" or "serving"."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(str(path))
    except FileNotFoundError:
        return "absent"
    except PermissionError:
        return "denied"
    except OSError:
        return "refused"
    finally:
        probe.close()
    return "serving"


def root_prefix(ask: bool = True) -> tuple[list[str] | None, str]:
    """How to run a command as root here: ([], "") as root, (["sudo", "-n"], "")
    when sudo lets us (asking for the password once on a terminal), else
    (None, why not)."""
    if os.geteuid() == 0:
        return [], ""
    sudo = shutil.which("sudo")
    if sudo is None:
        return None, "this user is not root and sudo is not installed"
    if subprocess.run([sudo, "-n", "true"], capture_output=True).returncode == 0:
        return [sudo, "-n"], ""
    if ask and sys.stdin.isatty():
        asked = subprocess.run([sudo, "-v", "-p", "[sudo] password for %u (hivemind demo: dockerd, images): "])
        if asked.returncode == 0:
            return [sudo, "-n"], ""
    return None, "this user is not root and sudo did not allow it"


@dataclass(frozen=True)
class DockerPlan:
    """What the demo does about Docker, decided before anything starts."""

    host: DockerHost
    action: str  # "use" (it answers), "start" (we start it) or "none" (Docker cannot run)
    why: str = ""  # for "none": what is missing
    fix: str = ""  # for "none": the command that fixes it
    as_root: tuple[str, ...] = ()  # for "start": prefix that runs dockerd as root


def plan_docker(host: DockerHost, ask: bool = True) -> DockerPlan:
    problem = ping_problem(host)
    if problem is None:
        return DockerPlan(host, "use")
    if host.socket is None:
        return DockerPlan(
            host,
            "none",
            f"the Docker daemon at DOCKER_HOST={host.url} does not answer ({problem}); "
            "the demo starts only a local daemon on a unix socket",
            f"start the daemon at {host.url}, or unset DOCKER_HOST",
        )
    state = socket_state(host.socket)
    if state == "denied":
        return DockerPlan(
            host,
            "none",
            f"dockerd is running but this user may not use {host.socket}",
            "sudo usermod -aG docker $USER  (then log in again), or run the demo as root",
        )
    if state == "serving":
        return DockerPlan(
            host,
            "none",
            f"something serves {host.socket} but does not answer as Docker ({problem})",
            "look at dockerd's log (journalctl -u docker), or restart it: sudo systemctl restart docker",
        )
    if shutil.which("dockerd") is None:
        return DockerPlan(
            host, "none", "Docker is not installed (no dockerd on PATH)", "sudo apt-get install docker.io  (or: make deps)"
        )
    prefix, why_not = root_prefix(ask)
    if prefix is None:
        return DockerPlan(
            host,
            "none",
            f"dockerd is installed but not running, and {why_not}",
            "sudo dockerd &  (or: sudo systemctl start docker)",
        )
    if not host.default and shutil.which("ip") is None:
        return DockerPlan(
            host,
            "none",
            f"a dockerd of its own on {host.socket} needs a bridge, made with `ip`, which is not installed",
            "sudo apt-get install iproute2",
        )
    return DockerPlan(host, "start", as_root=tuple(prefix))


@dataclass(frozen=True)
class OwnDaemon:
    """Where a daemon on a non-default socket keeps its things."""

    state: Path  # data root and pidfile live here
    exec_root: Path  # short: containerd's socket path must fit in 108 bytes
    bridge: str
    address: str  # the bridge's address, CIDR

    def argv(self, host: DockerHost) -> list[str]:
        return [
            "--host",
            host.url,
            "--data-root",
            str(self.state / "data"),
            "--exec-root",
            str(self.exec_root),
            "--pidfile",
            str(self.state / "dockerd.pid"),
            "--bridge",
            self.bridge,
            "--iptables=false",
            "--ip-masq=false",
        ]


def own_daemon(host: DockerHost, demo_root: Path) -> OwnDaemon:
    return OwnDaemon(
        demo_root / "dockerd",
        Path("/run") / f"{BRIDGE_PREFIX}{host.key}",
        f"{BRIDGE_PREFIX}{host.key}",
        free_subnet(int(host.key, 16)),
    )


def free_subnet(seed: int) -> str:
    """A /24 under 10.234/16 that no interface here has an address in."""
    import psutil

    used = [
        ipaddress.ip_interface(f"{a.address}/{a.netmask}").network
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family == socket.AF_INET and a.netmask
    ]
    for step in range(256):
        net = ipaddress.ip_network(OWN_SUBNETS.format((seed + step) % 256))
        if not any(net.overlaps(other) for other in used):
            return f"{net[1]}/{net.prefixlen}"
    raise RuntimeError("no free /24 under 10.234.0.0/16 for the demo's own dockerd bridge")


def bridge_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def make_bridge(name: str, address: str, as_root: list[str]) -> None:
    if bridge_exists(name):
        return
    for argv in (
        ["ip", "link", "add", name, "type", "bridge"],
        ["ip", "addr", "add", address, "dev", name],
        ["ip", "link", "set", name, "up"],
    ):
        done = subprocess.run([*as_root, *argv], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(
                f"could not make the bridge {name} for the demo's dockerd (`{' '.join(argv)}`: {done.stderr.strip()})"
            )


def remove_bridge(name: str) -> None:
    """Only bridges of the demo's own daemons; a missing one is fine."""
    if name.startswith(BRIDGE_PREFIX) and bridge_exists(name):
        prefix, _ = root_prefix(ask=False)
        subprocess.run([*(prefix or []), "ip", "link", "del", name], capture_output=True)


def start(plan: DockerPlan, sup: Supervisor, demo_root: Path, say=print) -> tuple[Child, str]:
    """Start dockerd as `plan` says; the Supervisor stops it with the rest of
    the site (last, as it was started first). Returns the child and the bridge
    made for it ("" for the default daemon), to remove once it has stopped."""
    host, as_root = plan.host, list(plan.as_root)
    argv = [*as_root, "dockerd"]
    bridge = ""
    if not host.default:
        assert host.socket is not None
        own = own_daemon(host, demo_root)
        own.state.mkdir(parents=True, exist_ok=True)
        host.socket.parent.mkdir(parents=True, exist_ok=True)
        make_bridge(own.bridge, own.address, as_root)
        bridge = own.bridge
        argv += own.argv(host)
    say(
        f"dockerd is installed but not running: starting it on {host.socket} "
        f"(log: {sup.log_dir / 'dockerd.log'}); the demo stops it when it ends"
    )
    return sup.start("dockerd", argv, dict(os.environ), demo_root, grace=STOP_GRACE), bridge


def wait_ready(host: DockerHost, child: Child) -> None:
    wait_until(lambda: ping_problem(host) is None, child, START_TIMEOUT, f"answering on {host.socket}")
