"""Results and the CPT ledger on a real Node Pool: first upload wins, the node's user is
paid once with `hivemind_celery.core.reward`, from figures the pool caps itself."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hivemind_celery.core.reward import compute_reward
from nodepool import accounts, results
from nodepool.errors import Refused
from nodepool.server import RunningPool
from nodepool.tasks import check_zip
from proto import nodepool_pb2 as pb
from tests.nodepool_kit import (
    Client,
    TestWorker,
    make_zip,
    new_task_id,
    register_node,
    result_zip,
    serving_pool,
    task_status,
    wait_for,
)


@pytest.fixture()
def pool(tmp_path) -> Iterator[RunningPool]:  # noqa: ANN001
    with serving_pool(tmp_path, {"owner": 1000, "node1": 0, "node2": 0}) as running:
        yield running


@pytest.fixture()
def worker() -> Iterator[TestWorker]:
    w = TestWorker().start()
    yield w
    w.stop()


def running_task(pool: RunningPool, client: Client, worker: TestWorker, ran_for_s: float = 0.0) -> tuple[str, str, str]:
    """A task RUNNING on node1, as if started `ran_for_s` seconds ago; returns (task_id, owner token, node token)."""
    owner, node = client.login("owner"), client.login("node1")
    register_node(client, node, "node1", worker.port)
    task_id = new_task_id()
    assert client.master.UploadTask(pb.UploadTaskRequest(task_id=task_id, task_zip=make_zip(), token=owner)).success
    wait_for(lambda: task_status(client, owner, task_id).status == "RUNNING", what="task RUNNING")
    if ran_for_s:
        with pool.pool.store.transaction() as conn:
            conn.execute("UPDATE tasks SET started_at = ? WHERE task_id = ?", (time.time() - ran_for_s, task_id))
    return task_id, owner, node


def upload_result(client: Client, token: str, task_id: str, data: bytes) -> pb.TaskResultUploadResponse:
    return client.worker.TaskResultUpload(pb.TaskResultUploadRequest(task_id=task_id, result_zip=data, token=token))


def balances(pool: RunningPool) -> tuple[int, int]:
    store = pool.pool.store
    return accounts.balance_by_name(store, "owner"), accounts.balance_by_name(store, "node1")


def test_result_pays_the_node_once_with_capped_figures(pool: RunningPool, client: Client, worker: TestWorker) -> None:
    task_id, owner, node = running_task(pool, client, worker, ran_for_s=1800)
    # The report claims two hours and impossible percentages; the pool saw about 30 minutes.
    report = {
        "task_id": task_id,
        "status": "succeeded",
        "duration_s": 7200,
        "usage": {"cpu_percent": 500.0, "memory_percent": 90.0, "gpu_percent": -3},
    }
    data = result_zip(report)
    before = balances(pool)
    reply = upload_result(client, node, task_id, data)
    assert reply.success, reply.message

    paid = results.payment_for(pool.pool.store, task_id)
    assert paid is not None and paid.source == "report"
    assert 1800 <= paid.duration_s < 1800 + 60
    assert (paid.cpu_percent, paid.memory_percent, paid.gpu_percent) == (100.0, 90.0, 0.0)
    policy = pool.pool.policy
    assert paid.amount_due == compute_reward(paid.duration_s, 100.0, 90.0, 0.0, policy)
    assert paid.amount_due < compute_reward(7200, 100.0, 90.0, 0.0, policy)  # the cap mattered
    assert paid.amount_paid == paid.amount_due
    after = balances(pool)
    assert after == (before[0] - paid.amount_paid, before[1] + paid.amount_paid)
    assert task_status(client, owner, task_id).status == "COMPLETED"

    # A second upload (at-least-once delivery) is acknowledged and changes nothing.
    reply = upload_result(client, node, task_id, result_zip({"status": "failed"}))
    assert reply.success and "duplicate" in reply.message
    assert balances(pool) == after
    fetched = client.master.GetTaskResult(pb.GetTaskResultRequest(task_id=task_id, token=owner))
    assert fetched.success and fetched.result_zip == data
    assert pool.pool.store.conn.execute("SELECT COUNT(*) FROM ledger WHERE task_id = ?", (task_id,)).fetchone()[0] == 1


def test_owner_pays_what_they_have_and_never_goes_negative(pool: RunningPool, client: Client, worker: TestWorker) -> None:
    task_id, _, node = running_task(pool, client, worker, ran_for_s=3600)
    with pool.pool.store.transaction() as conn:
        conn.execute("UPDATE users SET balance = 2 WHERE username = 'owner'")
    report = {"status": "succeeded", "duration_s": 3600, "usage": {"cpu_percent": 90, "memory_percent": 90}}
    assert upload_result(client, node, task_id, result_zip(report)).success
    paid = results.payment_for(pool.pool.store, task_id)
    assert paid.amount_due > 2 and paid.amount_paid == 2
    assert balances(pool) == (0, 2)


def test_without_a_report_the_pool_uses_its_usage_samples(pool: RunningPool, client: Client, worker: TestWorker) -> None:
    task_id, owner, node = running_task(pool, client, worker, ran_for_s=2400)
    for cpu, memory in ((80.0, 40.0), (100.0, 60.0)):
        assert client.worker.TaskUsage(
            pb.TaskUsageRequest(task_id=task_id, cpu_usage=cpu, memory_usage=memory, token=node)
        ).success
    assert upload_result(client, node, task_id, result_zip(None)).success
    paid = results.payment_for(pool.pool.store, task_id)
    assert paid.source == "samples"
    assert (paid.cpu_percent, paid.memory_percent) == (90.0, 50.0)
    assert paid.amount_due == compute_reward(paid.duration_s, 90.0, 50.0, 0.0, pool.pool.policy)
    assert task_status(client, owner, task_id).status == "COMPLETED"


def test_without_report_or_samples_the_minimum_is_paid(pool: RunningPool, client: Client, worker: TestWorker) -> None:
    task_id, _, node = running_task(pool, client, worker, ran_for_s=3600)
    broken = make_zip({"execution_report.json": "{not json"})
    assert upload_result(client, node, task_id, broken).success
    paid = results.payment_for(pool.pool.store, task_id)
    assert paid.source == "minimum" and paid.amount_due == pool.pool.policy.minimum


def test_a_failed_run_is_marked_failed_with_its_reason(pool: RunningPool, client: Client, worker: TestWorker) -> None:
    task_id, owner, node = running_task(pool, client, worker)
    report = {"status": "oom_killed", "reason": "memory limit 1 GiB reached", "usage": {}}
    assert upload_result(client, node, task_id, result_zip(report)).success
    info = task_status(client, owner, task_id)
    assert info.status == "FAILED" and "memory limit 1 GiB reached" in info.message


def test_results_from_another_node_or_not_zips_are_refused(pool: RunningPool, client: Client, worker: TestWorker) -> None:
    task_id, owner, node = running_task(pool, client, worker)
    intruder = client.login("node2")
    reply = upload_result(client, intruder, task_id, result_zip({"status": "succeeded"}))
    assert not reply.success and "not assigned to node 'node2'" in reply.message
    reply = upload_result(client, node, task_id, b"not a zip at all")
    assert not reply.success and "result_zip is not a zip file" in reply.message
    assert task_status(client, owner, task_id).status == "RUNNING"
    assert results.payment_for(pool.pool.store, task_id) is None


def test_report_reading_survives_hostile_zips() -> None:
    assert results.read_report(b"junk") is None
    assert results.read_report(make_zip({"execution_report.json": "[1, 2]"})) is None
    huge = make_zip({"execution_report.json": "{" + " " * (results.MAX_REPORT_BYTES + 1) + "}"})
    assert results.read_report(huge) is None
    assert (
        results.report_duration({"started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:01:30+00:00"}) == 90.0
    )
    assert results.report_duration({"duration_s": float("nan")}) is None
    assert results.report_duration({"duration": True}) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048) | st.builds(lambda b: b"PK\x03\x04" + b, st.binary(max_size=512)))
def test_arbitrary_bytes_never_crash_the_zip_checks(data: bytes) -> None:
    report = results.read_report(data)
    assert report is None or isinstance(report, dict)
    try:
        check_zip(data, "task_zip", 4096)
    except Refused as exc:
        assert str(exc).startswith("task_zip ")


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["status", "duration_s", "duration", "started_at", "finished_at", "usage"]),
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats()
        | st.text(max_size=30)
        | st.dictionaries(st.text(max_size=15), st.floats() | st.text(max_size=5), max_size=4),
    )
)
def test_any_report_gives_payable_figures(report: dict) -> None:
    duration, cpu, memory, gpu, source = results._assess(report, 100.0, (0, 0.0, 0.0, 0.0))
    assert 0.0 <= duration <= 100.0
    assert all(0.0 <= value <= 100.0 for value in (cpu, memory, gpu))
    assert source == "report"
