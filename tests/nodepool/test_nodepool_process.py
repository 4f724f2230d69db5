"""`python -m nodepool` as a real process: serves, answers health checks and logins,
logs structured lines without passwords or tokens, and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nodepool import accounts
from nodepool.store import Store
from proto import nodepool_pb2 as pb
from tests.nodepool_kit import PASSWORD, Client, free_port, serving, wait_for
from tests.services_kit import ROOT


@pytest.mark.parametrize(
    "command", [["-m", "nodepool"], ["-m", "hivemind.cli", "nodepool"]], ids=["python -m nodepool", "hivemind nodepool"]
)
def test_pool_process_serves_and_stops(tmp_path: Path, command: list[str]) -> None:
    db = tmp_path / "pool.db"
    store = Store(db)
    accounts.create_user(store, "alice", PASSWORD, balance=7)
    store.close()
    port = free_port()
    env = {
        **os.environ,
        "HIVEMIND_NODEPOOL_DB": str(db),
        "HIVEMIND_NODEPOOL_PORT": str(port),
        "HIVEMIND_NODEPOOL_HOST": "127.0.0.1",
        "HIVEMIND_LOG_JSON": "1",
        "PYTHONPATH": str(ROOT),
    }
    log_path = tmp_path / "pool.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen([sys.executable, *command], cwd=tmp_path, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            address = f"127.0.0.1:{port}"
            wait_for(lambda: serving(address), timeout=30, what="the pool's health check")
            client = Client(address)
            token = client.login("alice")
            assert client.users.GetBalance(pb.GetBalanceRequest(token=token)).balance == 7
            assert not client.users.Login(pb.LoginRequest(username="alice", password="guess")).success
            client.close()
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=30)
    assert code == 0
    text = log_path.read_text()
    assert PASSWORD not in text and token not in text
    lines = [line for line in text.splitlines() if line.startswith("{")]
    assert any('"message": "login"' in line and '"node_id": "alice"' in line for line in lines), text


def test_every_setting_is_documented() -> None:
    from nodepool.settings import NodePoolSettings

    readme = (ROOT / "nodepool" / "README.md").read_text()
    missing = [name for name in NodePoolSettings.model_fields if f"| `{name.upper()}` |" not in readme]
    assert not missing, f"document these in nodepool/README.md: {missing}"
