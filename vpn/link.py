"""Bringing the tunnel interface up and down without wg-quick.

wg-quick would apply DNS, add policy routes for 0.0.0.0/0 and run the config's
hooks; this does only: create the interface (kernel WireGuard when `ip link add
type wireguard` works, else `wireguard-go -f` as a child process), `wg setconf`
with WireGuard's own keys, `ip addr add` of the tunnel address with the VPN
network's prefix (so the kernel's one connected route is the only route added),
`ip link set up`. `down` removes the interface, which takes its address and route
with it; nothing else on the host was touched, so nothing else needs undoing.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

from vpn.config import Network, TunnelConfig, check_vpn_network
from vpn.errors import TunnelError, TunnelToolMissing
from vpn.tools import CAPABILITY_HINT, Tools, missing_tool

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9_.=+-]{1,15}$")
UAPI_DIR = Path("/var/run/wireguard")
TUN_DEVICE = "/dev/net/tun"


def check_interface_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise TunnelError(f"interface name {name!r} must be 1-15 letters, digits or _.=+-")
    return name


# wireguard-go goes when the process that started it does, even on SIGKILL: this
# launcher asks the kernel for that (PR_SET_PDEATHSIG), gives up if that process is
# already gone, then becomes the program. Not preexec_fn: it makes Popen fork() instead
# of vfork(), gRPC's fork handlers then restart its poller thread in the child, and that
# thread aborts the child when Popen closes the inherited descriptors before exec
# (grpc/grpc#43055), so wireguard-go never starts.
_BOUND_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None).prctl(1, signal.SIGTERM)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(0)\n"
    "try:\n"
    "    os.execvp(sys.argv[2], sys.argv[2:])\n"
    "except OSError as error:\n"
    "    sys.stderr.write(f'cannot run {sys.argv[2]}: {error.strerror}\\n')\n"
    "    sys.exit(127)\n"
)


def start_bound(
    argv: list[str], *, env: dict[str, str] | None = None, stderr: IO[bytes] | None = None
) -> subprocess.Popen[bytes]:
    """Start `argv` so that it gets SIGTERM when this process ends."""
    return subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _BOUND_LAUNCHER, str(os.getpid()), *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )


class WireGuardLink:
    """One tunnel interface this process brought up (or found up from an earlier `up --detach`)."""

    def __init__(
        self,
        name: str,
        tools: Tools | None = None,
        *,
        userspace: bool | None = None,
        pid_file: Path | None = None,
        detach: bool = False,
    ) -> None:
        self.name = check_interface_name(name)
        self.tools = tools or Tools()
        self.userspace = userspace  # None: kernel when it has WireGuard, else wireguard-go
        self.pid_file = pid_file
        # detach: wireguard-go outlives this process (`hivemind vpn up`); else it dies with it
        # (the bridge). PR_SET_PDEATHSIG follows the spawning thread: spawn from a long-lived one.
        self.detach = detach
        self._process: subprocess.Popen[bytes] | None = None
        self.kind: str | None = None

    # -- state ------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.tools.ip("link", "show", "dev", self.name, check=False).returncode == 0

    def handshake_age(self) -> float | None:
        """Seconds since the latest handshake with any peer; None when there has been none
        (or the interface is gone)."""
        done = self.tools.wg("show", self.name, "latest-handshakes", check=False)
        if done.returncode != 0:
            return None
        stamps = [
            int(parts[1])
            for parts in (line.split() for line in done.stdout.splitlines())
            if len(parts) == 2 and parts[1].isdigit() and int(parts[1]) > 0
        ]
        return max(0.0, time.time() - max(stamps)) if stamps else None

    def wait_handshake(self, timeout: float, config: TunnelConfig | None = None) -> float:
        """Block until a handshake is seen; TunnelError after `timeout` seconds. With `config`,
        its peers' keepalives are switched off and on every few seconds: WireGuard sends a
        keepalive (so starts a handshake) at once when one is switched on."""
        deadline = time.monotonic() + timeout
        next_nudge = time.monotonic() + 3.0
        while True:
            age = self.handshake_age()
            if age is not None and age < 180:  # WireGuard rekeys every 2 min; older is stale
                return age
            if time.monotonic() >= deadline:
                raise TunnelError(
                    f"no WireGuard handshake on {self.name} within {timeout:.0f}s: the pool's "
                    "endpoint did not answer (is UDP to it blocked, or was this key refused?)"
                )
            if config is not None and time.monotonic() >= next_nudge:
                self.nudge(config)
                next_nudge = time.monotonic() + 3.0
            time.sleep(0.2)

    def nudge(self, config: TunnelConfig) -> None:
        for peer in config.peers:
            if peer.endpoint:
                keepalive = str(peer.persistent_keepalive or 25)
                self.tools.wg("set", self.name, "peer", peer.public_key, "persistent-keepalive", "off", check=False)
                self.tools.wg("set", self.name, "peer", peer.public_key, "persistent-keepalive", keepalive, check=False)

    # -- up / down --------------------------------------------------------------------
    def up(self, config: TunnelConfig, network: Network) -> None:
        """Bring the interface up with `config` (already narrowed to `network`)."""
        check_vpn_network(network)
        for peer in config.peers:
            wider = [str(n) for n in peer.allowed_ips if not (n.version == network.version and n.subnet_of(network))]  # type: ignore[arg-type]
            if wider:
                raise TunnelError(f"refusing to route {', '.join(wider)} outside the VPN network {network}")
        if self.exists():
            raise TunnelError(
                f"interface {self.name} already exists; not touching it (is the tunnel already up? `hivemind vpn down` first)"
            )
        self._check_no_overlap(network)
        self._create()
        try:
            self.tools.wg("setconf", self.name, "/dev/stdin", stdin=config.setconf_text())
            address = ipaddress.ip_interface(f"{config.address.ip}/{network.prefixlen}")
            self.tools.ip("address", "add", str(address), "dev", self.name)
            for extra in config.addresses[1:]:
                # Another address would bring its own connected route: only the VPN network is routed.
                log.warning("tunnel %s: extra Address %s ignored (only %s is routed)", self.name, extra, network)
            if config.mtu:
                self.tools.ip("link", "set", "dev", self.name, "mtu", str(config.mtu))
            self.tools.ip("link", "set", "dev", self.name, "up")
        except BaseException:
            self.down()
            raise
        log.info("tunnel %s up (%s WireGuard), address %s, routing only %s", self.name, self.kind, config.address.ip, network)

    def _check_no_overlap(self, network: Network) -> None:
        done = self.tools.ip("-j", f"-{network.version}", "route", "show", check=False)
        try:
            routes = json.loads(done.stdout or "[]")
        except ValueError:
            return
        for route in routes:
            destination = route.get("dst", "")
            if destination in ("default", "") or route.get("dev") == self.name:
                continue
            try:
                existing = ipaddress.ip_network(destination, strict=False)
            except ValueError:
                continue
            if existing.version == network.version and existing.overlaps(network):  # type: ignore[arg-type]
                raise TunnelError(
                    f"the VPN network {network} overlaps this host's route to {existing} "
                    f"(dev {route.get('dev')}); refusing to take it over"
                )

    def _create(self) -> None:
        if self.userspace is not True:
            done = self.tools.ip("link", "add", "dev", self.name, "type", "wireguard", check=False)
            if done.returncode == 0:
                self.kind = "kernel"
                return
            message = done.stderr.lower()
            if "not permitted" in message:
                raise TunnelToolMissing(f"ip link add {self.name}: {done.stderr.strip()}; the tunnel needs {CAPABILITY_HINT}")
            if self.userspace is False:
                raise TunnelError(f"kernel WireGuard unavailable: {done.stderr.strip()}")
        self._start_userspace()
        self.kind = "userspace"

    def _start_userspace(self) -> None:
        if not os.path.exists(TUN_DEVICE):
            raise TunnelToolMissing(
                f"{TUN_DEVICE} is missing: userspace WireGuard needs the TUN device (in Docker: devices: /dev/net/tun)"
            )
        argv = self.tools.argv(self.tools.wireguard_go, "-f", self.name)
        # wireguard-go refuses to start on kernels with WireGuard unless told userspace is wanted.
        env = {**os.environ, "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1", "LOG_LEVEL": "error"}
        # Its messages go to an unnamed file, not a pipe: a detached wireguard-go must not die of
        # SIGPIPE when this process is gone.
        errors = tempfile.TemporaryFile()
        try:
            if self.detach:
                self._process = subprocess.Popen(
                    argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True
                )
            else:
                self._process = start_bound(argv, env=env, stderr=errors)
        except FileNotFoundError:
            errors.close()
            raise missing_tool(self.tools.wireguard_go) from None
        socket = UAPI_DIR / f"{self.name}.sock"
        deadline = time.monotonic() + 10
        while not (socket.exists() and self.exists()):
            if self._process.poll() is not None:
                errors.seek(0)
                err = errors.read().decode(errors="replace").strip()
                errors.close()
                self._process = None
                if "operation not permitted" in err.lower() or "permission denied" in err.lower():
                    raise TunnelToolMissing(
                        f"wireguard-go could not create {self.name}: {err[-300:]}; it needs {CAPABILITY_HINT}"
                    )
                if "no such file" in err.lower() and not err.startswith("wireguard-go"):
                    raise missing_tool(self.tools.wireguard_go)
                raise TunnelError(f"wireguard-go exited at start: {err[-300:] or 'no message'}")
            if time.monotonic() > deadline:
                errors.close()
                self._stop_process()
                raise TunnelError(f"wireguard-go did not create {self.name} within 10s")
            time.sleep(0.05)
        errors.close()  # the child keeps its own descriptor
        if self.pid_file is not None:
            self.pid_file.write_text(f"{self._process.pid}\n")

    def _stop_process(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def down(self) -> None:
        """Remove the interface (and with it its address and route); stop wireguard-go."""
        had_process = self._process is not None
        self._stop_process()
        if not had_process:
            self._stop_recorded_process()
        if self.exists():
            self.tools.ip("link", "delete", "dev", self.name, check=False)
        if self.pid_file is not None:
            self.pid_file.unlink(missing_ok=True)
        log.info("tunnel %s down", self.name)

    def _stop_recorded_process(self) -> None:
        """The wireguard-go a detached `up` left running, if its pid file still names it."""
        if self.pid_file is None or not self.pid_file.is_file():
            return
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (ValueError, OSError):
            return
        if any(part.endswith(b"wireguard-go") for part in cmdline) and self.name.encode() in cmdline:
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.05)

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self._process
