"""A restarted Node Pool keeps users, tasks, running work and results (all in SQLite)."""

from __future__ import annotations

import time
from pathlib import Path

from nodepool import results
from nodepool.server import RunningPool
from proto import nodepool_pb2 as pb
from tests.nodepool_kit import (
    Client,
    TestWorker,
    add_user,
    make_zip,
    new_task_id,
    register_node,
    result_zip,
    start_pool,
    task_status,
    wait_for,
)


def _restart(old: RunningPool, tmp_path: Path, **overrides: object) -> RunningPool:
    old.stop()
    return start_pool(tmp_path, **overrides)


def test_restart_keeps_tasks_and_results(tmp_path: Path) -> None:
    worker = TestWorker().start()
    running = start_pool(tmp_path)
    client = Client(running.address)
    try:
        add_user(running, "owner", balance=100)
        add_user(running, "node1")
        owner, node = client.login("owner"), client.login("node1")
        register_node(client, node, "node1", worker.port)
        started = new_task_id()
        assert client.master.UploadTask(pb.UploadTaskRequest(task_id=started, task_zip=make_zip(), token=owner)).success
        wait_for(lambda: task_status(client, owner, started).status == "RUNNING", what="task RUNNING")
        assert client.worker.TaskOutputUpload(
            pb.TaskOutputUploadRequest(task_id=started, output="half way\n", token=node)
        ).success

        # Restart with the node busy, so a task uploaded meanwhile stays pending across it.
        client.nodes.ReportStatus(
            pb.RunningStatusRequest(node_id="node1", status="Running 1 task"), metadata=(("authorization", f"Bearer {node}"),)
        )
        waiting = new_task_id()
        assert client.master.UploadTask(pb.UploadTaskRequest(task_id=waiting, task_zip=make_zip(), token=owner)).success
        # The pool is "down" long enough that its node's last report is older than the silence limit.
        with running.pool.store.transaction() as conn:
            conn.execute("UPDATE nodes SET last_seen = last_seen - 300")
        client.close()
        running = _restart(running, tmp_path, silent_fail_s=2.0, busy_silent_fail_s=2.0)
        client = Client(running.address)
        time.sleep(0.5)  # several dispatch rounds: silence is counted from the restart, not before it

        # Same secret, same users: the old tokens still work; state is as it was.
        assert task_status(client, owner, started).status == "RUNNING"
        assert task_status(client, owner, waiting).status == "PENDING"
        assert client.master.GetTasklog(pb.TasklogRequest(task_id=started, token=owner)).log == "half way\n"

        # The running task's result arrives after the restart and is paid.
        data = result_zip({"status": "succeeded", "duration_s": 1, "usage": {"cpu_percent": 50, "memory_percent": 50}})
        assert client.worker.TaskResultUpload(pb.TaskResultUploadRequest(task_id=started, result_zip=data, token=node)).success
        register_node(client, node, "node1", worker.port)  # Idle again: the waiting task goes out
        wait_for(lambda: task_status(client, owner, waiting).status == "RUNNING", what="waiting task RUNNING")

        client.close()
        running = _restart(running, tmp_path)
        client = Client(running.address)
        fetched = client.master.GetTaskResult(pb.GetTaskResultRequest(task_id=started, token=owner))
        assert fetched.success and fetched.result_zip == data
        assert task_status(client, owner, started).status == "COMPLETED"
        assert results.payment_for(running.pool.store, started) is not None
        assert worker.executed_ids == [started, waiting]
    finally:
        client.close()
        running.stop()
        worker.stop()
