"""The WireGuard tunnel against the direct path: dispatch latency and a 50 MB result upload.

Both paths run in the same run, in the small internet of tests/vpn/netns_kit.py: our Node
Pool (with its VPN hub) in the pool namespace, the whole site (Redis, a Celery worker
running tasks in Docker, the bridge) in the volunteer namespace behind the NAT home router.

- tunnel: the site joins the pool's hub (userspace wireguard-go on both ends: this kernel
  has no WireGuard module), registers its tunnel address and talks to the pool at the
  pool's tunnel address (HIVEMIND_TUNNEL_NODEPOOL_ADDRESS): both directions in the tunnel;
- direct: the router forwards TCP 50053 to the site (a port forward, the way a site is
  reachable without a tunnel), the site registers the router's WAN address and talks to
  the pool at its public address through the router's NAT.

Per task, from real clocks on the one host:
- dispatch: the task's upload stored by the pool -> the task's first line in its container
  (the pool's dispatch round, ExecuteTask carrying a 5 MB task zip over the path, the
  bridge's intake, Celery, container start);
- result: the task's last line (after writing 50 MB of random bytes) -> the pool storing
  the result (packing the result zip, the bridge's TaskResultUpload of ~50 MB over the path).

The paths alternate in ROUNDS rounds of TASKS tasks (the machine's load drifts). Ratio =
tunnel median / direct median (1.0: the tunnel costs nothing). Needs root, dockerd, the
task image, wireguard-go, wireguard-tools, iptables.
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from tests.nodepool_kit import wait_for  # noqa: E402
from tests.vpn.netns_kit import ROUTER_WAN, VOLUNTEER_LAN, HomeInternet  # noqa: E402
from tests.vpn.site_kit import BRIDGE_PORT, POOL_PORT, TunnelSite  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_TUNNEL_ROUNDS", "2"))
TASKS = int(os.environ.get("BENCH_TUNNEL_TASKS", "3"))
RESULT_MB = 50
TASK_ZIP_MB = 5

MAIN = f"""import os, time
print('started', repr(time.time()), flush=True)
with open('/workspace/result.bin', 'wb') as out:
    out.write(os.urandom({RESULT_MB} * 1024 * 1024))
os.remove('/workspace/payload.bin')
print('finished', repr(time.time()), flush=True)
"""


def port_forward(net: HomeInternet) -> None:
    rules = [
        [
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-i",
            "wan1",
            "-p",
            "tcp",
            "--dport",
            str(BRIDGE_PORT),
            "-j",
            "DNAT",
            "--to-destination",
            f"{VOLUNTEER_LAN}:{BRIDGE_PORT}",
        ],
        [
            "-I",
            "FORWARD",
            "-i",
            "wan1",
            "-o",
            "lan0",
            "-p",
            "tcp",
            "-d",
            VOLUNTEER_LAN,
            "--dport",
            str(BRIDGE_PORT),
            "-j",
            "ACCEPT",
        ],
    ]
    for rule in rules:
        net.in_ns(net.router, "iptables", *rule)


def run_path(path: str, net: HomeInternet, tmp: Path, payload: bytes) -> list[tuple[float, float]]:
    if path == "tunnel":
        # Both ways through the tunnel: the pool dials the site there, and the site uploads
        # its result to the pool's tunnel address.
        site = TunnelSite(net, tmp, tunnel=True, bridge_env={"HIVEMIND_TUNNEL_NODEPOOL_ADDRESS": f"10.88.0.1:{POOL_PORT}"})
        hostname = "10.88.0.2"
    else:
        site = TunnelSite(
            net, tmp, tunnel=False, bridge_env={"HIVEMIND_ADVERTISE_HOST": ROUTER_WAN, "HIVEMIND_BRIDGE_BIND": "0.0.0.0"}
        )
        hostname = ROUTER_WAN
    site.start()
    figures = []
    try:
        site.wait_registered(hostname)
        for _ in range(TASKS):
            task_id = site.submit({"main.py": MAIN, "payload.bin": payload})
            assert site.wait_status(task_id, {"COMPLETED", "FAILED"}, timeout=300) == "COMPLETED", site.task(task_id)
            row = site.row("SELECT created_at, result_at FROM tasks WHERE task_id = ?", task_id)
            with site.result(task_id) as result:
                logs = result.read("task_logs.txt").decode()
                assert result.getinfo("result.bin").file_size == RESULT_MB * 1024 * 1024
            started = float(re.search(r"started (\S+)", logs).group(1))  # type: ignore[union-attr]
            finished = float(re.search(r"finished (\S+)", logs).group(1))  # type: ignore[union-attr]
            figures.append((started - row["created_at"], row["result_at"] - finished))
            wait_for(lambda: (site.node() or {"status": ""})["status"] == "Idle", timeout=60, what="the site idle")
    finally:
        site.stop()
    return figures


def main() -> None:
    # Random, so the zip does not shrink it: the transfer is really 5 MB.
    payload = os.urandom(TASK_ZIP_MB * 1024 * 1024)
    results: dict[str, list[tuple[float, float]]] = {"tunnel": [], "direct": []}
    per_round: list[str] = []
    order = ["tunnel", "direct"]
    for round_number in range(ROUNDS):
        for path in order if round_number % 2 == 0 else list(reversed(order)):
            net = HomeInternet().open()
            try:
                if path == "direct":
                    port_forward(net)
                with tempfile.TemporaryDirectory(prefix=f"bench-tunnel-{path}-") as tmp:
                    results[path] += run_path(path, net, Path(tmp), payload)
            finally:
                net.close()
            latest = results[path][-TASKS:]
            per_round.append(
                f"round {round_number + 1} {path}: dispatch "
                f"{statistics.median(f[0] for f in latest) * 1000:.0f} ms, result "
                f"{statistics.median(f[1] for f in latest) * 1000:.0f} ms"
            )
            print(per_round[-1], flush=True)

    def median(path: str, index: int) -> float:
        return statistics.median(f[index] for f in results[path])

    rows = []
    for index, what in (
        (0, f"dispatch: upload stored → container start ({TASK_ZIP_MB} MB task zip)"),
        (1, f"result: task end → result stored by the pool ({RESULT_MB} MB random file)"),
    ):
        direct, tunnel = median("direct", index), median("tunnel", index)
        rows.append(f"| {what} | {direct * 1000:.0f} ms | {tunnel * 1000:.0f} ms | {tunnel / direct:.2f} |")
        print(rows[-1])
    body = f"""
Our Node Pool and the whole site in network namespaces (tests/vpn/netns_kit.py): the site
behind a NAT home router. Direct: the router forwards TCP {BRIDGE_PORT} to the site, which
uploads to the pool's public address. Tunnel: the site joined the pool's WireGuard hub
(`wireguard-go` on both ends: no kernel module here); dispatch and upload both go through it.
{ROUNDS} rounds × {TASKS} tasks per path, alternating; medians.

| measured | direct (port forward) | tunnel | ratio (tunnel / direct) |
|---|---|---|---|
{chr(10).join(rows)}

Both include work that is the same on either path (the pool's dispatch round, Celery and
container start; packing the result zip): the ratios understate the path's own cost.
Medians of each round (the machine is shared: compare a path's rounds to see the drift):
{chr(10).join("- " + line for line in per_round)}
"""
    write_section(
        "tunnel",
        "WireGuard tunnel vs direct path (dispatch latency, 50 MB result)",
        "sudo scripts/with-services.sh .venv/bin/python bench/bench_tunnel.py",
        body,
    )


if __name__ == "__main__":
    main()
