"""The dispatcher runs a round at once on an upload (and on a node reporting Idle),
not only every dispatch interval: with an interval of an hour here, a task still
reaches the Idle worker straight away. Real pool and a real in-test worker server."""

from __future__ import annotations

from pathlib import Path

from proto import nodepool_pb2 as pb
from tests.nodepool_kit import (
    Client,
    TestWorker,
    add_user,
    make_zip,
    new_task_id,
    register_node,
    start_pool,
    wait_for,
)


def test_upload_is_dispatched_without_waiting_for_the_interval(tmp_path: Path) -> None:
    running = start_pool(tmp_path, dispatch_interval_s=3600.0)
    worker = TestWorker().start()
    client = Client(running.address)
    try:
        add_user(running, "owner", balance=10)
        add_user(running, "node1")
        register_node(client, client.login("node1"), "node1", worker.port)
        task_id = new_task_id()
        reply = client.master.UploadTask(
            pb.UploadTaskRequest(task_id=task_id, task_zip=make_zip(), memory_gb=1, cpu_score=100, token=client.login("owner"))
        )
        assert reply.success, reply.message
        wait_for(lambda: task_id in worker.executed_ids, timeout=10, what="the upload dispatched at once")
    finally:
        client.close()
        worker.stop()
        running.stop()
