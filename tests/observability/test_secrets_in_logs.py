"""No secret in any log: a Node Pool (`python -m nodepool`), a bridge
(`python -m bridge`) and a Celery worker, all real processes logging JSON at
DEBUG, run a task end to end (logins, a refused login, registration, dispatch
with the shared worker secret, a real container, the relayed result); then
every line they wrote is searched for each password, the signing key, the
worker secret and anything shaped like a JWT."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from nodepool import accounts
from nodepool.store import Store
from proto import nodepool_pb2 as pb
from tests.nodepool_kit import Client, free_port, make_zip, serving, task_status, wait_for
from tests.services_kit import ROOT

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]

JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVEMIND_")}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", HIVEMIND_LOG_JSON="1", HIVEMIND_LOG_LEVEL="DEBUG")
    env.update(values)
    return env


def test_no_secret_in_any_log(start_worker, redis_url: str, tmp_path: Path) -> None:
    secrets = {
        "owner password": f"owner-pw-{uuid.uuid4().hex}",
        "site password": f"site-pw-{uuid.uuid4().hex}",
        "wrong password tried": f"guess-pw-{uuid.uuid4().hex}",
        "token signing key": f"signing-key-{uuid.uuid4().hex}{uuid.uuid4().hex}",
        "worker secret": f"worker-secret-{uuid.uuid4().hex}",
    }
    db = tmp_path / "pool.db"
    store = Store(db)
    accounts.create_user(store, "owner", secrets["owner password"], balance=100)
    accounts.create_user(store, "site1", secrets["site password"])
    store.close()
    pool_port, bridge_port = free_port(), free_port()
    logs = {name: tmp_path / f"{name}.log" for name in ("pool", "bridge")}
    procs: list[subprocess.Popen] = []
    worker = start_worker("cpu", HIVEMIND_LOG_JSON="1", HIVEMIND_LOG_LEVEL="DEBUG")
    try:
        with logs["pool"].open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "nodepool"],
                    cwd=tmp_path,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=_env(
                        HIVEMIND_NODEPOOL_DB=str(db),
                        HIVEMIND_NODEPOOL_PORT=str(pool_port),
                        HIVEMIND_NODEPOOL_HOST="127.0.0.1",
                        HIVEMIND_NODEPOOL_SECRET=secrets["token signing key"],
                        HIVEMIND_NODEPOOL_WORKER_SECRET=secrets["worker secret"],
                        HIVEMIND_NODEPOOL_DISPATCH_INTERVAL_S="0.2",
                    ),
                )
            )
        wait_for(lambda: serving(f"127.0.0.1:{pool_port}"), timeout=30, what="the pool serving")
        with logs["bridge"].open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "bridge"],
                    cwd=tmp_path,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=_env(
                        REDIS_URL=redis_url,
                        HIVEMIND_USERNAME="site1",
                        HIVEMIND_PASSWORD=secrets["site password"],
                        HIVEMIND_NODEPOOL_ADDRESS=f"localhost:{pool_port}",
                        HIVEMIND_BRIDGE_PORT=str(bridge_port),
                        HIVEMIND_BRIDGE_BIND="127.0.0.1",
                        HIVEMIND_BRIDGE_SECRET=secrets["worker secret"],
                        HIVEMIND_HEARTBEAT_INTERVAL="0.5",
                        HIVEMIND_RELAY_INTERVAL="0.2",
                    ),
                )
            )
        client = Client(f"127.0.0.1:{pool_port}")
        refused = client.users.Login(pb.LoginRequest(username="owner", password=secrets["wrong password tried"]))
        assert not refused.success
        reply = client.users.Login(pb.LoginRequest(username="owner", password=secrets["owner password"]))
        assert reply.success
        token = reply.token
        task_id = f"s-{uuid.uuid4().hex[:10]}"
        upload = client.master.UploadTask(
            pb.UploadTaskRequest(
                task_id=task_id,
                task_zip=make_zip({"main.py": "print('secret-free output')\n"}),
                memory_gb=1,
                cpu_score=100,
                token=token,
            )
        )
        assert upload.success, upload.message
        wait_for(
            lambda: (task_status(client, token, task_id) or pb.TaskInfo()).status == "COMPLETED",
            timeout=180,
            what="the task completed through pool, bridge and worker",
        )
        fetched = client.master.GetTaskResult(pb.GetTaskResultRequest(task_id=task_id, token=token))
        assert fetched.success
        client.close()
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        worker.stop()
    texts = {name: path.read_text(errors="replace") for name, path in logs.items()}
    texts["worker"] = worker.log_path.read_text(errors="replace")
    assert task_id in texts["pool"] and task_id in texts["bridge"] and task_id in texts["worker"]
    assert all(sum(line.startswith("{") for line in text.splitlines()) > 3 for text in texts.values())
    for name, text in texts.items():
        for what, secret in {**secrets, "owner's login token": token}.items():
            assert secret not in text, f"the {what} appears in the {name} log"
        assert not JWT.search(text), f"a JWT appears in the {name} log: {JWT.search(text).group(0)[:20]}..."
