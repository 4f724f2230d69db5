"""Running the network tools (ip, wg, wireguard-go), optionally inside a network
namespace, with one clear error when one is missing or not permitted."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from vpn.errors import TunnelError, TunnelToolMissing

PACKAGE_OF = {"ip": "iproute2", "wg": "wireguard-tools", "wireguard-go": "wireguard-go"}
NOT_PERMITTED = ("operation not permitted", "permission denied")
CAPABILITY_HINT = (
    "CAP_NET_ADMIN (run as root, or give the process the capability; in Docker: cap_add NET_ADMIN and the device /dev/net/tun)"
)


def missing_tool(program: str) -> TunnelToolMissing:
    package = PACKAGE_OF.get(program.rsplit("/", 1)[-1], program)
    return TunnelToolMissing(f"{program} is not installed: install the Debian package {package} (apt-get install {package})")


class Tools:
    """`ip`, `wg` and `wireguard-go` by path, run in `netns` when given (tests)."""

    def __init__(self, netns: str | None = None, ip: str = "ip", wg: str = "wg", wireguard_go: str = "wireguard-go") -> None:
        self.netns = netns
        self.ip_program, self.wg_program, self.wireguard_go = ip, wg, wireguard_go

    def argv(self, program: str, *args: str) -> list[str]:
        prefix = [self.ip_program, "netns", "exec", self.netns] if self.netns else []
        return [*prefix, program, *args]

    def run(
        self, program: str, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 15.0
    ) -> subprocess.CompletedProcess[str]:
        argv = self.argv(program, *args)
        try:
            done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            raise missing_tool(program) from None
        except subprocess.TimeoutExpired:
            raise TunnelError(f"{program} {' '.join(args[:3])} did not finish in {timeout:.0f}s") from None
        if check and done.returncode != 0:
            raise command_error(program, args, done.stderr)
        return done

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(self.ip_program, *args, check=check)

    def wg(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(self.wg_program, *args, stdin=stdin, check=check)


def command_error(program: str, args: Sequence[str], stderr: str) -> TunnelError:
    text = (stderr or "").strip().splitlines()
    last = text[-1][:300] if text else "no message"
    if any(word in last.lower() for word in NOT_PERMITTED):
        return TunnelToolMissing(f"{program} {' '.join(args[:3])}: {last}; the tunnel needs {CAPABILITY_HINT}")
    return TunnelError(f"{program} {' '.join(args[:3])} failed: {last}")
