"""The relay: output, usage and results from Redis to the Node Pool, at least
once, resumed by a restarted bridge, held while the pool is down.

Most tests play the worker's side with the worker's own code on the real
Redis (OutputStream, the usage key, task/result.store_result for the result
zip, and Celery's result backend for the task state), so each relay case is
exact and quick. The last test runs a real `celery worker` subprocess with
Docker end to end through the bridge.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Callable
from typing import Any

import pytest
import redis

from bridge.outbox import OwedTask
from bridge.server import Bridge
from hivemind_celery.core import keys
from hivemind_celery.core.model import TaskStatus
from hivemind_celery.payloads.store import PayloadStore
from hivemind_celery.task.idempotency import TaskGuard
from hivemind_celery.task.outcomes import rejected_outcome
from hivemind_celery.task.result import store_result
from hivemind_celery.task.streams import OutputStream
from tests.bridge_kit import RecordingPool, add_worker, bridge_settings, execute, finish, stop_task, wait_for
from tests.services_kit import make_zip

pytestmark = pytest.mark.redis


# The bridge modules keep fixed databases of their own (conftest numbers the
# others from 16 up, per pytest process): parallel runs by other people would
# otherwise share queues with them, and their workers would take our tasks.
BRIDGE_DB = 61


@pytest.fixture(scope="module")
def redis_url(redis_base: str) -> str:
    return f"{redis_base}/{BRIDGE_DB}"


def write_output(db: redis.Redis, task_id: str, *chunks: bytes) -> None:
    stream = OutputStream(db, task_id)
    for chunk in chunks:
        stream.write(chunk)
        stream.flush()


def report_of(zip_bytes: bytes) -> dict[str, Any]:
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
        return json.loads(archive.read("execution_report.json"))


def sent_output(pool: RecordingPool, task_id: str) -> str:
    return "".join(request.output for request in pool.of("TaskOutputUpload", task_id))


def test_output_usage_and_result_are_relayed_once(
    start_bridge: Callable[..., Bridge], db: redis.Redis, pool: RecordingPool
) -> None:
    registry = add_worker(db, cpus=4, memory_mb=8192)
    bridge = start_bridge()
    assert execute(bridge, "t-relay", cpu_usage=200.0).success
    assert registry.capacity().cpus_free == 2.0

    write_output(db, "t-relay", b"line 1\n", "ünïcode ✓\n".encode(), b"bad \xff byte\n")
    wait_for(lambda: sent_output(pool, "t-relay").endswith("byte\n"), "the output so far")
    assert sent_output(pool, "t-relay") == "line 1\nünïcode ✓\nbad \ufffd byte\n"

    db.set(keys.task_usage("t-relay"), json.dumps({"cpu_percent": 42.5, "memory_percent": 12.0}))
    usage = wait_for(lambda: pool.of("TaskUsage", "t-relay"), "a TaskUsage for the task")
    assert (usage[0].cpu_usage, usage[0].memory_usage) == (42.5, 12.0)

    write_output(db, "t-relay", b"last line\n")
    outcome = finish(db, bridge, "t-relay")
    results = wait_for(lambda: pool.of("TaskResultUpload", "t-relay"), "the result upload")
    wait_for(lambda: not bridge.outbox.owes("t-relay"), "the task struck from the outbox")

    assert results[0].result_zip == bridge.payloads.get(outcome.result_ref or "")
    assert report_of(results[0].result_zip)["status"] == "succeeded"
    assert sent_output(pool, "t-relay").endswith("last line\n")
    names = [name for name, request, _ in pool.calls if getattr(request, "task_id", "") == "t-relay"]
    assert names.index("TaskResultUpload") > max(i for i, n in enumerate(names) if n == "TaskOutputUpload")
    assert registry.capacity().cpus_free == 4.0
    assert not db.exists(keys.task_output("t-relay"))

    # More passes send nothing again.
    assert bridge.relay is not None
    assert bridge.relay.relay_once() == 0
    assert len(pool.of("TaskResultUpload", "t-relay")) == 1
    assert sent_output(pool, "t-relay").count("line 1") == 1


def test_restarted_bridge_resumes_what_it_owes(
    start_bridge: Callable[..., Bridge], db: redis.Redis, pool: RecordingPool, redis_url: str
) -> None:
    add_worker(db)
    settings = bridge_settings(redis_url, pool)
    first = start_bridge(settings)
    assert execute(first, "t-resume").success
    write_output(db, "t-resume", b"before restart\n")
    wait_for(lambda: sent_output(pool, "t-resume") == "before restart\n", "output sent by the first bridge")
    first.stop(grace=0)

    write_output(db, "t-resume", b"after restart\n")
    finish(db, first, "t-resume")
    second = start_bridge(settings)
    wait_for(lambda: pool.of("TaskResultUpload", "t-resume"), "the result sent by the restarted bridge")
    wait_for(lambda: not second.outbox.owes("t-resume"), "the task struck from the outbox")
    assert sent_output(pool, "t-resume") == "before restart\nafter restart\n"
    assert len(pool.of("TaskResultUpload", "t-resume")) == 1


def test_pool_down_then_back_gets_the_result(
    start_bridge: Callable[..., Bridge], db: redis.Redis, pool: RecordingPool, caplog: pytest.LogCaptureFixture
) -> None:
    add_worker(db)
    bridge = start_bridge()
    assert execute(bridge, "t-outage").success
    wait_for(lambda: pool.of("ReportStatus"), "a heartbeat before the outage")
    pool.stop()
    write_output(db, "t-outage", b"while the pool was away\n")
    finish(db, bridge, "t-outage")
    wait_for(
        lambda: "relay failed" in caplog.text and "heartbeat failed" in caplog.text,
        "failed relay and heartbeat attempts while the pool is down",
    )
    assert bridge.outbox.owes("t-outage")

    with pool._lock:
        pool.tokens.clear()  # it comes back as a fresh process: old tokens are void
    pool.start()  # same port
    wait_for(lambda: pool.of("TaskResultUpload", "t-outage"), "the result once the pool is back", limit=90)
    wait_for(lambda: not bridge.outbox.owes("t-outage"), "the task struck from the outbox")
    assert sent_output(pool, "t-outage") == "while the pool was away\n"
    assert pool.refused, "the first call after the restart carried the old token"
    assert pool.of("Login"), "logged in again to the restarted pool"
    assert bridge.heartbeat is not None and bridge.heartbeat._thread is not None
    assert bridge.heartbeat._thread.is_alive()


def test_refused_result_is_sent_again(start_bridge: Callable[..., Bridge], db: redis.Redis, pool: RecordingPool) -> None:
    add_worker(db)
    pool.refuse_results = 2
    bridge = start_bridge()
    assert execute(bridge, "t-refused").success
    finish(db, bridge, "t-refused")
    wait_for(lambda: not bridge.outbox.owes("t-refused"), "delivery after two refusals")
    assert len(pool.of("TaskResultUpload", "t-refused")) == 3


def test_a_finished_tasks_room_is_free_before_its_result_is_acknowledged(
    start_bridge: Callable[..., Bridge], db: redis.Redis, pool: RecordingPool
) -> None:
    """Nothing of a finished task runs any more: the pool may send the next one
    while the result is still on its way (here: refused twice, then taken). The
    worker gives the room back itself; the relay does it when that failed."""
    registry = add_worker(db, cpus=2)
    pool.refuse_results = 2
    bridge = start_bridge()
    assert execute(bridge, "t-ended").success
    assert registry.capacity().cpus_free == 1.0
    finish(db, bridge, "t-ended", release=False)
    wait_for(lambda: pool.of("TaskResultUpload", "t-ended"), "a first (refused) result upload")
    assert registry.capacity().cpus_free == 2.0  # freed before the upload was even tried
    wait_for(lambda: not bridge.outbox.owes("t-ended"), "delivery after two refusals")
    assert len(pool.of("TaskResultUpload", "t-ended")) == 3
    assert registry.capacity().cpus_free == 2.0


def test_revoked_task_delivers_its_stored_outcome(
    start_bridge: Callable[..., Bridge], db: redis.Redis, pool: RecordingPool
) -> None:
    add_worker(db)
    bridge = start_bridge()
    assert execute(bridge, "t-revoked").success
    assert stop_task(bridge, "t-revoked").success
    # A killed task has no Celery result of its own; the worker's main process
    # stores a cancelled outcome under the task's outcome key.
    outcome = rejected_outcome("t-revoked", "terminated by revoke", "w").model_copy(update={"status": TaskStatus.CANCELLED})
    outcome = store_result(outcome, PayloadStore(db, bridge.settings), bridge.settings, stopped=True)
    TaskGuard(db, "t-revoked").store_outcome(outcome)
    bridge.celery.backend.mark_as_revoked("t-revoked", "terminated")
    results = wait_for(lambda: pool.of("TaskResultUpload", "t-revoked"), "the cancelled result")
    assert report_of(results[0].result_zip)["status"] == "cancelled"
    with zipfile.ZipFile(io.BytesIO(results[0].result_zip)) as archive:
        assert "task_stopped.txt" in archive.namelist()


def test_failure_without_outcome_is_not_invented(
    start_bridge: Callable[..., Bridge], db: redis.Redis, pool: RecordingPool, caplog: pytest.LogCaptureFixture
) -> None:
    registry = add_worker(db, cpus=2)
    bridge = start_bridge()
    assert execute(bridge, "t-crashed").success
    assert registry.capacity().cpus_free == 1.0
    bridge.celery.backend.mark_as_failure("t-crashed", RuntimeError("worker blew up"))
    wait_for(lambda: "cannot deliver a result" in caplog.text, "the undeliverable task logged")
    assert registry.capacity().cpus_free == 2.0  # its room is given back
    assert pool.of("TaskResultUpload", "t-crashed") == []
    assert bridge.outbox.owes("t-crashed")
    assert caplog.text.count("cannot deliver a result") == 1


@pytest.mark.docker
@pytest.mark.slow
def test_real_worker_end_to_end(
    start_bridge: Callable[..., Bridge], db: redis.Redis, pool: RecordingPool, start_worker: Callable[..., Any], redis_url: str
) -> None:
    """Bridge -> Celery over Redis -> a real worker running Docker -> relay."""
    worker = start_worker(queues="cpu", concurrency=1)
    bridge = start_bridge()
    wait_for(lambda: bridge.registry.capacity().workers >= 1, "the worker in the registry")
    wait_for(lambda: pool.of("ReportStatus") and pool.of("ReportStatus")[-1].status == "Idle", "Idle")
    task_zip = make_zip({"main.py": "print('hello from the task')\nopen('out.txt', 'w').write('42')\n"})
    reply = execute(bridge, "t-e2e", task_zip, cpu_usage=100.0, memory_gb=1)
    assert reply.success, reply.message
    results = wait_for(lambda: pool.of("TaskResultUpload", "t-e2e"), "the result from the real worker", limit=240)
    report = report_of(results[0].result_zip)
    assert report["status"] == "succeeded", (report, worker.log())
    with zipfile.ZipFile(io.BytesIO(results[0].result_zip)) as archive:
        assert archive.read("out.txt") == b"42"
    assert "hello from the task" in sent_output(pool, "t-e2e")
    wait_for(lambda: not bridge.outbox.owes("t-e2e"), "the task struck from the outbox")


def test_passes_space_out_while_an_owed_task_is_silent(
    start_bridge: Callable[..., Bridge], db: redis.Redis, pool: RecordingPool
) -> None:
    add_worker(db, cpus=4, memory_mb=8192)
    bridge = start_bridge(relay_interval=0.2)
    assert bridge.relay is not None
    relay = bridge.relay
    passes: list[float] = []
    real_pass = relay.relay_once

    def counted_pass() -> int:
        passes.append(time.monotonic())
        return real_pass()

    relay.relay_once = counted_pass  # type: ignore[method-assign]
    # Owed as the intake records it, but not queued: this module's real worker must not run it.
    bridge.outbox.add(OwedTask("t-quiet", "cpu", 1.0, 512, 0, 0, time.time()))
    relay.wake()
    time.sleep(4.0)
    # Every 0.2 s would be about 20 passes; spaced out (0.2, 0.4, 0.8, then 1 s apart) about 7.
    assert len(passes) <= 10, len(passes)

    # Output with no stored state still goes, within the spaced-out wait.
    write_output(db, "t-quiet", b"after a silence\n")
    wait_for(lambda: sent_output(pool, "t-quiet") == "after a silence\n", "the output after a silence", limit=10)
    # (That a stored state wakes a pass at once, whatever the wait: test_bridge_heartbeat's
    # test_stored_result_wakes_the_relay, with a 30 s relay interval.)
    finish(db, bridge, "t-quiet")
    wait_for(lambda: pool.of("TaskResultUpload", "t-quiet"), "the result upload")
