"""A small internet in network namespaces, for the tunnel tests.

    pool ns  (198.18.0.1) --veth-- router ns (198.18.0.2 | 192.168.77.1, NAT) --veth-- volunteer ns (192.168.77.2)

The router masquerades the volunteer's traffic out of its WAN side and drops
anything from the WAN the volunteer did not start: a home router. The pool has no
route to 192.168.77.0/24 at all, as on the internet. Only these namespaces'
addresses are ever targets; every name carries a per-run suffix, and `close()`
removes the namespaces (their veths and interfaces go with them) and any
wireguard-go left in them.

Needs root and iproute2, iptables, wireguard-go and wireguard-tools; without them
the tests skip, or fail under HIVEMIND_REQUIRE_SERVICES=1 (CI runs as root).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REQUIRE = os.environ.get("HIVEMIND_REQUIRE_SERVICES") == "1"
TOOLS = {"ip": "iproute2", "iptables": "iptables", "wg": "wireguard-tools", "wireguard-go": "wireguard-go"}

POOL_WAN = "198.18.0.1"
ROUTER_WAN = "198.18.0.2"
ROUTER_LAN = "192.168.77.1"
VOLUNTEER_LAN = "192.168.77.2"


def require_netns_tools() -> None:
    missing = [f"{tool} (Debian package {package})" for tool, package in TOOLS.items() if not shutil.which(tool)]
    reason = None
    if os.geteuid() != 0:
        reason = "network namespace tests need root (CAP_NET_ADMIN)"
    elif missing:
        reason = "missing " + ", ".join(missing)
    elif not os.path.exists("/dev/net/tun"):
        reason = "/dev/net/tun is missing"
    if reason:
        if REQUIRE:
            pytest.fail(f"{reason} (HIVEMIND_REQUIRE_SERVICES=1: this must not skip)")
        pytest.skip(reason)


def sh(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, input=input, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done


class HomeInternet:
    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.pool = f"hmpool-{self.tag}"
        self.router = f"hmrtr-{self.tag}"
        self.volunteer = f"hmvol-{self.tag}"
        self.names = [self.pool, self.router, self.volunteer]

    def in_ns(self, ns: str, *argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", ns, *argv, check=check, input=input)

    def open(self) -> HomeInternet:
        try:
            for ns in self.names:
                sh("ip", "netns", "add", ns)
                self.in_ns(ns, "ip", "link", "set", "lo", "up")
                # IPv6 link-local addresses settle at once (no DAD), so a snapshot taken right after
                # `open()` is not overtaken by them a second later.
                self.in_ns(ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0")
            sh("ip", "link", "add", "wan0", "netns", self.pool, "type", "veth", "peer", "name", "wan1", "netns", self.router)
            sh("ip", "link", "add", "lan0", "netns", self.router, "type", "veth", "peer", "name", "lan1", "netns", self.volunteer)
            for ns, dev, address in (
                (self.pool, "wan0", POOL_WAN),
                (self.router, "wan1", ROUTER_WAN),
                (self.router, "lan0", ROUTER_LAN),
                (self.volunteer, "lan1", VOLUNTEER_LAN),
            ):
                self.in_ns(ns, "ip", "address", "add", f"{address}/24", "dev", dev)
                self.in_ns(ns, "ip", "link", "set", dev, "up")
            self.in_ns(self.volunteer, "ip", "route", "add", "default", "via", ROUTER_LAN)
            self.in_ns(self.router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            rules = [
                ["-t", "nat", "-A", "POSTROUTING", "-o", "wan1", "-j", "MASQUERADE"],
                [
                    "-A",
                    "FORWARD",
                    "-i",
                    "wan1",
                    "-o",
                    "lan0",
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "ESTABLISHED,RELATED",
                    "-j",
                    "ACCEPT",
                ],
                ["-A", "FORWARD", "-i", "wan1", "-o", "lan0", "-j", "DROP"],
            ]
            for rule in rules:
                self.in_ns(self.router, "iptables", *rule)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for ns in self.names:
            self._kill_processes_in(ns)
            sh("ip", "netns", "delete", ns, check=False)
        for sock in Path("/var/run/wireguard").glob(f"*{self.tag}*.sock"):
            sock.unlink(missing_ok=True)

    def _kill_processes_in(self, ns: str) -> None:
        done = sh("ip", "netns", "pids", ns, check=False)
        for pid in done.stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass

    def snapshot(self, ns: str) -> tuple[str, str, str]:
        """What a tunnel must leave as it found it: routes (all tables, v4 and v6), rules, resolv.conf."""
        routes = self.in_ns(ns, "ip", "route", "show", "table", "all").stdout
        routes6 = self.in_ns(ns, "ip", "-6", "route", "show", "table", "all").stdout
        rules = self.in_ns(ns, "ip", "rule", "show").stdout
        resolv = self.in_ns(ns, "cat", "/etc/resolv.conf", check=False).stdout  # as the namespace sees it
        return routes + routes6, rules, resolv


# A listener and a dialer for reachability checks between the namespaces.
SERVE = (
    "import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
    "s.bind(('0.0.0.0', 7070)); s.listen(); print('ready', flush=True); c,_=s.accept(); "
    "c.sendall(b'hello from the volunteer'); c.close()"
)
DIAL = "import socket,sys; c=socket.create_connection((sys.argv[1], 7070), timeout=3); print(c.recv(100).decode())"


def serve_in(net: HomeInternet, ns: str) -> subprocess.Popen[str]:
    """A one-shot TCP server on port 7070 in namespace `ns`, ready when this returns."""
    process = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SERVE], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def dial_from(net: HomeInternet, ns: str, address: str) -> subprocess.CompletedProcess[str]:
    """Connect from namespace `ns` to `address`:7070 and read what it says."""
    return net.in_ns(ns, sys.executable, "-c", DIAL, address, check=False)
