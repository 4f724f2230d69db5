"""The user CLI (typer's CliRunner, in-process) against a real Node Pool on loopback."""

from __future__ import annotations

import json
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hivemind.cli import app
from hivemind.cli.task_cmds import new_output
from nodepool.server import RunningPool
from proto import nodepool_pb2 as pb
from tests.nodepool_kit import (
    PASSWORD,
    Client,
    TestWorker,
    register_node,
    result_zip,
    start_pool,
    wait_for,
)

runner = CliRunner()


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    return tmp_path / "pool.db"


def invoke(args: list[str], env: dict[str, str]):  # noqa: ANN201 - click Result
    return runner.invoke(app, args, env=env, catch_exceptions=False)


def add(db: Path, name: str, balance: int = 0, password: str = PASSWORD):  # noqa: ANN201
    return invoke(["users", "add", name, "--password", password, "--balance", str(balance)], {"HIVEMIND_NODEPOOL_DB": str(db)})


@pytest.fixture()
def pool(tmp_path: Path, db: Path) -> Iterator[RunningPool]:
    assert add(db, "alice", balance=40).exit_code == 0
    assert add(db, "bob").exit_code == 0
    assert add(db, "node1").exit_code == 0
    running = start_pool(tmp_path, db=db)
    yield running
    running.stop()


def user_env(pool: RunningPool, username: str = "alice", password: str = PASSWORD) -> dict[str, str]:
    return {"HIVEMIND_NODEPOOL_ADDRESS": pool.address, "HIVEMIND_USERNAME": username, "HIVEMIND_PASSWORD": password}


def test_users_add_refuses_duplicates_and_bad_input(db: Path) -> None:
    assert add(db, "carol", balance=3).exit_code == 0
    again = add(db, "carol")
    assert again.exit_code == 1 and "already exists" in again.output
    assert add(db, "x y").exit_code == 1
    assert "too short" in add(db, "dave", password="short").output
    listing = invoke(["users", "list"], {"HIVEMIND_NODEPOOL_DB": str(db)})
    assert "carol" in listing.output and "dave" not in listing.output


def test_balance_and_transfer(pool: RunningPool) -> None:
    result = invoke(["balance"], user_env(pool))
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "40 CPT"
    result = invoke(["transfer", "bob", "15"], user_env(pool))
    assert result.exit_code == 0, result.output
    assert invoke(["balance"], user_env(pool, "bob")).output.strip() == "15 CPT"
    refused = invoke(["transfer", "bob", "1000"], user_env(pool))
    assert refused.exit_code == 1 and "insufficient balance" in refused.output


def test_wrong_password_and_unreachable_pool_are_clear_errors(pool: RunningPool) -> None:
    result = invoke(["balance"], user_env(pool, password="wrong password"))
    assert result.exit_code == 1 and "login as 'alice' failed: invalid username or password" in result.output
    result = invoke(["balance"], {**user_env(pool), "HIVEMIND_NODEPOOL_ADDRESS": "127.0.0.1:1"})
    assert result.exit_code == 1 and "cannot reach the Node Pool at 127.0.0.1:1" in result.output
    result = invoke(["balance"], {**user_env(pool), "HIVEMIND_USERNAME": ""})
    assert result.exit_code == 1 and "HIVEMIND_USERNAME" in result.output


def _play_worker(pool: RunningPool, worker: TestWorker, report: dict) -> threading.Thread:
    """Act as the node: when the task arrives, send output and a result."""

    def run() -> None:
        wait_for(lambda: worker.executed_ids, what="ExecuteTask")
        task_id = worker.executed_ids[0]
        client = Client(pool.address)
        token = client.login("node1")
        wait_for(
            lambda: (
                pool.pool.store.conn.execute("SELECT status FROM tasks WHERE task_id = ?", (task_id,)).fetchone()[0] == "RUNNING"
            ),
            what="RUNNING",
        )
        client.worker.TaskOutputUpload(pb.TaskOutputUploadRequest(task_id=task_id, output="hello from task\n", token=token))
        client.worker.TaskResultUpload(
            pb.TaskResultUploadRequest(
                task_id=task_id, result_zip=result_zip({**report, "task_id": task_id}, {"out.txt": "42"}), token=token
            )
        )
        client.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_submit_wait_json_then_status_logs_result(pool: RunningPool, tmp_path: Path) -> None:
    worker = TestWorker().start()
    try:
        client = Client(pool.address)
        register_node(client, client.login("node1"), "node1", worker.port)
        client.close()
        task_dir = tmp_path / "task"
        task_dir.mkdir()
        (task_dir / "main.py").write_text("print('hello from task')\n")
        report = {"status": "succeeded", "exit_code": 0, "reward": 1, "usage": {"cpu_percent": 10}}
        thread = _play_worker(pool, worker, report)

        result = invoke(["submit", str(task_dir), "--wait", "--json", "--poll", "0.1", "--cpu-score", "50"], user_env(pool))
        thread.join(timeout=30)
        assert result.exit_code == 0, result.output
        final = json.loads(result.stdout)
        task_id = final["task_id"]
        assert final["status"] == "COMPLETED"
        assert final["report"]["exit_code"] == 0 and final["report"]["task_id"] == task_id
        sent = worker.executed[0]
        with zipfile.ZipFile(__import__("io").BytesIO(sent.task_zip)) as archive:
            assert archive.namelist() == ["main.py"]
        assert sent.cpu_usage == 50.0

        status = invoke(["status", task_id], user_env(pool))
        assert status.exit_code == 0 and "COMPLETED" in status.output
        logs = invoke(["logs", task_id, "--follow", "--poll", "0.1"], user_env(pool))
        assert logs.exit_code == 0 and logs.stdout == "hello from task\n"
        target = tmp_path / "result.zip"
        fetched = invoke(["result", task_id, "-o", str(target)], user_env(pool))
        assert fetched.exit_code == 0, fetched.output
        with zipfile.ZipFile(target) as archive:
            assert archive.read("out.txt") == b"42"
        other = invoke(["result", task_id, "-o", str(tmp_path / "b.zip")], user_env(pool, "bob"))
        assert other.exit_code == 1 and "no task" in other.output
    finally:
        worker.stop()


def test_submit_refusals_and_stop(pool: RunningPool, tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    result = invoke(["submit", str(bad)], user_env(pool))
    assert result.exit_code == 1 and "task_zip is not a zip file" in result.output

    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as archive:
        archive.writestr("run.sh", "echo hi\n")
    result = invoke(["submit", str(good), "--task-id", "mine-1", "--gpu"], user_env(pool))
    assert result.exit_code == 0, result.output
    row = pool.pool.store.conn.execute("SELECT gpu_score, status FROM tasks WHERE task_id = 'mine-1'").fetchone()
    assert row["gpu_score"] > 0 and row["status"] == "PENDING"  # no GPU node: it waits
    result = invoke(["stop", "mine-1"], user_env(pool))
    assert result.exit_code == 0 and "stopped before it started" in result.output
    assert invoke(["status"], user_env(pool)).output.count("STOPPED") == 1


@pytest.mark.parametrize(
    "old,new,expected",
    [
        ("", "abc", "abc"),
        ("abc", "abcdef", "def"),
        ("x" * 2000 + "abc", "x" * 1500 + "abcdef", "def"),
        ("gone", "all new", "all new"),
    ],
)
def test_follow_prints_only_new_output(old: str, new: str, expected: str) -> None:
    assert new_output(old, new) == expected
