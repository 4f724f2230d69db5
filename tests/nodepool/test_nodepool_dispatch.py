"""The dispatcher against real in-test workers (real gRPC WorkerNodeService servers on
loopback): Idle nodes only, capacity and the GPU rule, refusals, stop, liveness.

No GPU exists here; "GPU nodes" are nodes that register GPU capacity, which is all
the pool's matching looks at."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from nodepool import tasks
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
    serving_pool,
    start_pool,
    task_status,
    wait_for,
)


@pytest.fixture()
def pool(tmp_path) -> Iterator[RunningPool]:  # noqa: ANN001
    users = dict.fromkeys(("owner", "cpu1", "cpu2", "gpu1", "big1"), 100)
    with serving_pool(tmp_path, users, worker_secret="shared-worker-secret") as running:
        yield running


@pytest.fixture()
def workers() -> Iterator[list[TestWorker]]:
    started: list[TestWorker] = []
    yield started
    for worker in started:
        worker.stop()


def worker(workers: list[TestWorker], **kwargs: object) -> TestWorker:
    w = TestWorker(**kwargs).start()  # type: ignore[arg-type]
    workers.append(w)
    return w


def submit(client: Client, token: str, **request: int | str) -> str:
    task_id = new_task_id()
    reply = client.master.UploadTask(pb.UploadTaskRequest(task_id=task_id, task_zip=make_zip(), token=token, **request))
    assert reply.success, reply.message
    return task_id


def settle(pool: RunningPool) -> None:
    """Run a few dispatch rounds' worth of time so a wrong dispatch would have happened."""
    time.sleep(pool.pool.settings.dispatch_interval_s * 5)


def test_dispatches_only_to_an_idle_node(pool: RunningPool, client: Client, workers: list[TestWorker]) -> None:
    owner, node_token = client.login("owner"), client.login("cpu1")
    w = worker(workers)
    register_node(client, node_token, "cpu1", w.port, status="Busy")
    task_id = submit(client, owner, memory_gb=1, cpu_score=10)
    settle(pool)
    assert w.executed_ids == []
    assert task_status(client, owner, task_id).status == "PENDING"

    reply = client.nodes.ReportStatus(
        pb.RunningStatusRequest(node_id="cpu1", status="Idle"), metadata=(("authorization", f"Bearer {node_token}"),)
    )
    assert reply.success
    wait_for(lambda: task_status(client, owner, task_id).status == "RUNNING", what="task RUNNING")
    assert w.executed_ids == [task_id]
    sent = w.executed[0]
    assert sent.task_zip == make_zip() and sent.memory_gb == 1 and sent.cpu_usage == 10.0
    assert w.metadata[0].get("x-hivemind-secret") == "shared-worker-secret"
    assert task_status(client, owner, task_id).worker_ip == "127.0.0.1"


def test_a_node_heard_from_too_long_ago_gets_nothing(pool: RunningPool, client: Client, workers: list[TestWorker]) -> None:
    owner = client.login("owner")
    w = worker(workers)
    register_node(client, client.login("cpu1"), "cpu1", w.port)
    with pool.pool.store.transaction() as conn:
        conn.execute("UPDATE nodes SET last_seen = ? WHERE node_id = 'cpu1'", (time.time() - 200,))
    task_id = submit(client, owner)
    settle(pool)
    assert w.executed_ids == []
    assert task_status(client, owner, task_id).status == "PENDING"


def test_capacity_and_gpu_rules(pool: RunningPool, client: Client, workers: list[TestWorker]) -> None:
    owner = client.login("owner")
    small, gpu, big = worker(workers), worker(workers), worker(workers)
    register_node(client, client.login("cpu1"), "cpu1", small.port, memory_gb=4, cpu_score=100)
    register_node(
        client,
        client.login("gpu1"),
        "gpu1",
        gpu.port,
        memory_gb=4,
        cpu_score=100,
        gpu_score=500,
        gpu_memory_gb=16,
        gpu_name="NVIDIA A100-SXM4-80GB",
    )

    too_big = submit(client, owner, memory_gb=32)
    gpu_task = submit(client, owner, gpu_memory_gb=8, gpu_name="a100")
    wrong_gpu = submit(client, owner, gpu_score=10, gpu_name="H100")
    too_much_gpu_memory = submit(client, owner, gpu_memory_gb=64)
    wait_for(lambda: gpu.executed_ids == [gpu_task], what="GPU task on the GPU node")
    settle(pool)
    assert small.executed_ids == []  # a GPU task never goes to a CPU-only node
    for task_id in (too_big, wrong_gpu, too_much_gpu_memory):
        assert task_status(client, owner, task_id).status == "PENDING"

    register_node(client, client.login("big1"), "big1", big.port, memory_gb=64, cpu_score=100)
    wait_for(lambda: big.executed_ids == [too_big], what="big task on the big node")
    settle(pool)
    assert gpu.executed_ids == [gpu_task]


def test_reservations_keep_a_node_from_being_overcommitted(pool: RunningPool, client: Client, workers: list[TestWorker]) -> None:
    """A task's request is held on its node from dispatch to result, as the deployed pool
    does: neither a heartbeat nor a re-registration of the same totals gives it back."""
    owner, node_token = client.login("owner"), client.login("cpu1")
    w = worker(workers)
    register_node(client, node_token, "cpu1", w.port, memory_gb=4, cpu_score=100)
    first, second = submit(client, owner, memory_gb=3), submit(client, owner, memory_gb=3)
    wait_for(lambda: len(w.executed_ids) == 1, what="one task sent")
    settle(pool)
    assert w.executed_ids == [first]  # 3 + 3 GB does not fit into 4
    register_node(client, node_token, "cpu1", w.port, memory_gb=4, cpu_score=100)  # same totals, Idle again
    settle(pool)
    assert w.executed_ids == [first]  # the first task still holds its 3 GB
    reply = client.worker.TaskResultUpload(pb.TaskResultUploadRequest(task_id=first, result_zip=result_zip(), token=node_token))
    assert reply.success, reply.message
    wait_for(lambda: w.executed_ids == [first, second], what="second task once the first one's result arrived")


def test_a_refusing_node_leaves_the_task_pending_with_the_reason(
    pool: RunningPool, client: Client, workers: list[TestWorker]
) -> None:
    owner = client.login("owner")
    w = worker(workers, accept=False, reason="site full")
    register_node(client, client.login("cpu1"), "cpu1", w.port)
    task_id = submit(client, owner)
    wait_for(lambda: "site full" in task_status(client, owner, task_id).message, what="refusal recorded")
    assert task_status(client, owner, task_id).status == "PENDING"
    w.accept = True
    wait_for(lambda: task_status(client, owner, task_id).status == "RUNNING", what="accepted after back-off")


def test_an_unreachable_node_leaves_the_task_pending(pool: RunningPool, client: Client, workers: list[TestWorker]) -> None:
    owner = client.login("owner")
    w = worker(workers)
    port = w.port
    w.stop()  # nothing listens on the registered port now
    register_node(client, client.login("cpu1"), "cpu1", port)
    task_id = submit(client, owner)
    wait_for(lambda: "UNAVAILABLE" in task_status(client, owner, task_id).message, what="dial failure recorded")
    assert task_status(client, owner, task_id).status == "PENDING"


def test_stop_reaches_the_node_and_the_late_result_is_kept(pool: RunningPool, client: Client, workers: list[TestWorker]) -> None:
    owner, node_token = client.login("owner"), client.login("cpu1")
    w = worker(workers)
    register_node(client, node_token, "cpu1", w.port)
    task_id = submit(client, owner)
    wait_for(lambda: task_status(client, owner, task_id).status == "RUNNING", what="task RUNNING")

    reply = client.master.StopTask(pb.StopTaskRequest(task_id=task_id, token=owner))
    assert reply.success, reply.message
    assert w.stopped == [task_id]
    assert task_status(client, owner, task_id).status == "STOPPED"

    packed = result_zip({"status": "cancelled", "reason": "stopped"}, {"task_stopped.txt": "stopped"})
    reply = client.worker.TaskResultUpload(pb.TaskResultUploadRequest(task_id=task_id, result_zip=packed, token=node_token))
    assert reply.success, reply.message
    fetched = client.master.GetTaskResult(pb.GetTaskResultRequest(task_id=task_id, token=owner))
    assert fetched.success and fetched.result_zip == packed
    assert task_status(client, owner, task_id).status == "STOPPED"


def test_a_round_with_a_stale_pending_list_does_not_send_a_task_again(
    pool: RunningPool, client: Client, workers: list[TestWorker], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round reads the PENDING tasks, then skips those whose ExecuteTask is in flight.
    A call that ends between the two leaves a RUNNING task on the round's list; sent
    again, the node answers "already accepted" and the pool took that for a task
    stopped during dispatch and stopped the real run (seen in the chain bench).
    The stale read is reproduced by handing the round the list taken while the
    first call was held (the one stand-in here; the node is a real gRPC server)."""
    owner, node_token = client.login("owner"), client.login("cpu1")
    w = worker(workers, hold=threading.Event())
    register_node(client, node_token, "cpu1", w.port)
    task_id = submit(client, owner, cpu_score=10)
    wait_for(lambda: w.executed_ids == [task_id], what="the first ExecuteTask to arrive")
    stale = tasks.pending(pool.pool.store)
    assert [entry[0] for entry in stale] == [task_id]
    w.hold.set()
    wait_for(lambda: task_status(client, owner, task_id).status == "RUNNING", what="task RUNNING")

    monkeypatch.setattr(tasks, "pending", lambda store: stale)
    assert pool.pool.dispatcher.run_once() == 0
    settle(pool)
    assert w.executed_ids == [task_id]
    assert w.stopped == []
    assert task_status(client, owner, task_id).status == "RUNNING"


def test_a_task_stopped_while_its_execute_call_is_on_its_way_is_stopped_on_the_node(
    pool: RunningPool, client: Client, workers: list[TestWorker]
) -> None:
    owner, node_token = client.login("owner"), client.login("cpu1")
    w = worker(workers, hold=threading.Event())
    register_node(client, node_token, "cpu1", w.port)
    task_id = submit(client, owner)
    wait_for(lambda: w.executed_ids == [task_id], what="the ExecuteTask to arrive")
    reply = client.master.StopTask(pb.StopTaskRequest(task_id=task_id, token=owner))
    assert reply.success, reply.message
    w.hold.set()
    wait_for(lambda: w.stopped == [task_id], what="the node told to stop the task")
    assert task_status(client, owner, task_id).status == "STOPPED"
    assert w.executed_ids == [task_id]


def test_running_task_fails_when_its_node_falls_silent(tmp_path, workers: list[TestWorker]) -> None:  # noqa: ANN001
    running = start_pool(tmp_path, silent_fail_s=1.0, busy_silent_fail_s=1.0)
    client = Client(running.address)
    try:
        add_user(running, "owner")
        add_user(running, "cpu1")
        owner = client.login("owner")
        w = worker(workers)
        register_node(client, client.login("cpu1"), "cpu1", w.port)
        task_id = submit(client, owner)
        wait_for(lambda: task_status(client, owner, task_id).status == "RUNNING", what="task RUNNING")
        wait_for(lambda: task_status(client, owner, task_id).status == "FAILED", what="task FAILED")
        assert "silent" in task_status(client, owner, task_id).message
    finally:
        client.close()
        running.stop()


def test_output_and_usage_from_the_assigned_node(pool: RunningPool, client: Client, workers: list[TestWorker]) -> None:
    owner, node_token = client.login("owner"), client.login("cpu1")
    w = worker(workers)
    register_node(client, node_token, "cpu1", w.port)
    task_id = submit(client, owner)
    wait_for(lambda: task_status(client, owner, task_id).status == "RUNNING", what="task RUNNING")

    keep = pool.pool.settings.output_keep_bytes
    for chunk in ("line one\n", "x" * keep, "last line\n"):
        reply = client.worker.TaskOutputUpload(pb.TaskOutputUploadRequest(task_id=task_id, output=chunk, token=node_token))
        assert reply.success, reply.message
    log = client.master.GetTasklog(pb.TasklogRequest(task_id=task_id, token=owner)).log
    assert log.endswith("x" * 100 + "last line\n")
    assert len(log.encode()) == keep and "line one" not in log

    reply = client.worker.TaskUsage(pb.TaskUsageRequest(task_id=task_id, cpu_usage=42.5, memory_usage=250.0, token=node_token))
    assert reply.success, reply.message
    info = task_status(client, owner, task_id)
    assert info.cpu_usage == pytest.approx(42.5) and info.memory_usage == 100.0  # clamped


@pytest.fixture()
def hour_backoff_pool(tmp_path) -> Iterator[tuple[RunningPool, Client]]:  # noqa: ANN001
    """A pool whose nodes back off for an hour, with users "owner" and "cpu1"."""
    running = start_pool(tmp_path, node_backoff_s=3600)
    client = Client(running.address)
    add_user(running, "owner")
    add_user(running, "cpu1")
    yield running, client
    client.close()
    running.stop()


def test_a_refusing_node_backs_off(hour_backoff_pool, workers: list[TestWorker]) -> None:  # noqa: ANN001
    running, client = hour_backoff_pool
    w = worker(workers, accept=False, reason="site full")
    register_node(client, client.login("cpu1"), "cpu1", w.port)
    task_id = submit(client, client.login("owner"))
    wait_for(lambda: w.executed_ids, what="first ExecuteTask")
    settle(running)
    assert w.executed_ids == [task_id]  # not asked again while backing off


def test_execute_deadline_grows_with_size_up_to_the_cap(tmp_path) -> None:  # noqa: ANN001
    from nodepool.worker_client import WorkerClient
    from tests.nodepool_kit import pool_settings

    settings = pool_settings(tmp_path)
    client = WorkerClient(settings)
    small, medium = client.execute_deadline(0), client.execute_deadline(int(10 * settings.execute_bytes_per_s))
    assert small == settings.execute_deadline_base_s
    assert medium == settings.execute_deadline_base_s + 10
    assert client.execute_deadline(10**12) == settings.execute_deadline_max_s


@pytest.mark.parametrize(
    "wanted,offered,ok",
    [
        ("", "", True),
        ("Any", "", True),
        ("any", "Tesla T4", True),
        ("a100", "NVIDIA A100-SXM4-80GB", True),
        ("H100", "NVIDIA A100", False),
        ("T4", "", False),
    ],
)
def test_gpu_name_rule(wanted: str, offered: str, ok: bool) -> None:
    from nodepool.dispatcher import gpu_name_matches

    assert gpu_name_matches(wanted, offered) is ok


def test_a_node_that_refused_is_asked_again_once_it_reports_idle(
    hour_backoff_pool,  # noqa: ANN001
    workers: list[TestWorker],
) -> None:
    """A refusal is often a race between a dispatch and the node's last report:
    the node's next Idle report ends the back-off (an hour here)."""
    running, client = hour_backoff_pool
    w = worker(workers, accept=False, reason="site full")
    node_token = client.login("cpu1")
    register_node(client, node_token, "cpu1", w.port)
    task_id = submit(client, client.login("owner"))
    wait_for(lambda: w.executed_ids, what="first ExecuteTask")
    settle(running)
    assert w.executed_ids == [task_id]  # backing off
    w.accept = True
    report_status(client, node_token, "Running (1 tasks)")
    settle(running)
    assert w.executed_ids == [task_id]  # a report that is not Idle does not end it
    report_status(client, node_token, "Idle")
    wait_for(lambda: w.executed_ids == [task_id, task_id], what="the task sent again after the Idle report")


def report_status(client: Client, token: str, status: str) -> None:
    reply = client.nodes.ReportStatus(
        pb.RunningStatusRequest(node_id="cpu1", status=status), metadata=(("authorization", f"Bearer {token}"),)
    )
    assert reply.success, reply.message
