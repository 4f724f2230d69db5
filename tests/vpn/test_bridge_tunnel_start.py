"""`python -m bridge` with the tunnel on and a join that cannot happen: one clear error,
exit 1, nothing served, nothing kept (no namespace needed: it stops before any interface)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from tests.services_kit import ROOT


def test_a_bridge_whose_join_url_does_not_answer_stops_with_one_clear_error(tmp_path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVEMIND_") and k != "REDIS_URL"}
    env.update(
        PYTHONPATH=str(ROOT),
        HIVEMIND_USERNAME="site1",
        HIVEMIND_PASSWORD="pw",
        HIVEMIND_TUNNEL="1",
        HIVEMIND_TUNNEL_JOIN_MODE="deployed",
        HIVEMIND_TUNNEL_JOIN_URL=f"http://127.0.0.1:{port}/api/vpn/join",
        HIVEMIND_TUNNEL_STATE_DIR=str(tmp_path / "tunnel"),
        HIVEMIND_TUNNEL_INTERFACE="hmnever0",
        HIVEMIND_BRIDGE_PORT="0",
        REDIS_URL="redis://127.0.0.1:1/0",
    )
    done = subprocess.run([sys.executable, "-m", "bridge"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "tunnel: join URL" in output and "did not answer" in output
    assert "Traceback" not in output
    assert not (tmp_path / "tunnel" / "tunnel.conf").exists()
