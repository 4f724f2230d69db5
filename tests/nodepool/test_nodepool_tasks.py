"""Task upload, listing, logs and owner-only access on a real Node Pool."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from nodepool.server import RunningPool
from proto import nodepool_pb2 as pb
from tests.nodepool_kit import (
    Client,
    make_zip,
    new_task_id,
    serving_pool,
    task_status,
)

MAX_TASK_BYTES = 4096


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPool]:
    # Dispatch effectively off: these tests look at tasks while they are PENDING.
    with serving_pool(
        tmp_path_factory.mktemp("tasks"),
        {"alice": 0, "bob": 0},
        max_task_bytes=MAX_TASK_BYTES,
        max_result_bytes=MAX_TASK_BYTES,
        dispatch_interval_s=3600,
    ) as running:
        yield running


def upload(client: Client, token: str, task_id: str, data: bytes, **request: int | str) -> pb.UploadTaskResponse:
    return client.master.UploadTask(pb.UploadTaskRequest(task_id=task_id, task_zip=data, token=token, **request))


def test_upload_queues_a_pending_task_for_its_owner(client: Client) -> None:
    alice, bob = client.login("alice"), client.login("bob")
    task_id = new_task_id()
    reply = upload(client, alice, task_id, make_zip(), memory_gb=1, cpu_score=10)
    assert reply.success, reply.message
    info = task_status(client, alice, task_id)
    assert info is not None and info.status == "PENDING"
    assert task_status(client, bob, task_id) is None  # bob does not see alice's tasks


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "task_zip is empty"),
        (b"#!/bin/sh\nrm -rf /\n", "task_zip is not a zip file"),
        (b"PK\x05\x06" + b"\x00" * 18, "holds no files"),  # an empty archive
        (make_zip({"big.bin": bytes(range(256)) * 64}), f"more than the limit of {MAX_TASK_BYTES}"),
    ],
    ids=["empty", "script", "empty-archive", "too-big"],
)
def test_bad_task_zips_are_refused(client: Client, data: bytes, reason: str) -> None:
    alice = client.login("alice")
    task_id = new_task_id()
    reply = upload(client, alice, task_id, data)
    assert not reply.success
    assert reason in reply.message
    assert task_status(client, alice, task_id) is None


@pytest.mark.parametrize(
    "task_id,request_fields,reason",
    [
        ("../etc/passwd", {}, "task_id '../etc/passwd' is not allowed"),
        ("", {}, "is not allowed"),
        ("x" * 200, {}, "is not allowed"),
        ("ok-id-1", {"memory_gb": -1}, "memory_gb must be between 0 and"),
        ("ok-id-2", {"gpu_memory_gb": 2**31 - 1}, "gpu_memory_gb must be between 0 and"),
    ],
)
def test_bad_requests_are_refused(client: Client, task_id: str, request_fields: dict, reason: str) -> None:
    reply = upload(client, client.login("alice"), task_id, make_zip(), **request_fields)
    assert not reply.success
    assert reason in reply.message


def test_duplicate_task_id_is_refused(client: Client) -> None:
    alice, bob = client.login("alice"), client.login("bob")
    task_id = new_task_id()
    assert upload(client, alice, task_id, make_zip()).success
    reply = upload(client, bob, task_id, make_zip({"run.sh": "echo other"}))
    assert not reply.success and "already exists" in reply.message
    assert task_status(client, bob, task_id) is None


def test_message_over_the_grpc_limit_is_refused_and_the_pool_keeps_serving(pool: RunningPool, client: Client) -> None:
    alice = client.login("alice")
    too_big = b"PK" + b"\x00" * (pool.pool.settings.max_message_bytes + 10)
    with pytest.raises(grpc.RpcError) as caught:
        upload(client, alice, new_task_id(), too_big)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert upload(client, alice, new_task_id(), make_zip()).success


def test_only_the_owner_may_read_stop_or_fetch(client: Client) -> None:
    alice, bob = client.login("alice"), client.login("bob")
    task_id = new_task_id()
    assert upload(client, alice, task_id, make_zip()).success

    reply = client.master.GetTaskResult(pb.GetTaskResultRequest(task_id=task_id, token=bob))
    assert not reply.success and "no task" in reply.message
    reply = client.master.StopTask(pb.StopTaskRequest(task_id=task_id, token=bob))
    assert not reply.success and "no task" in reply.message
    with pytest.raises(grpc.RpcError) as caught:
        client.master.GetTasklog(pb.TasklogRequest(task_id=task_id, token=bob))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert task_status(client, alice, task_id).status == "PENDING"

    # The owner gets "not yet" for the result, an empty log, and can stop it.
    reply = client.master.GetTaskResult(pb.GetTaskResultRequest(task_id=task_id, token=alice))
    assert not reply.success and "no result yet: task is PENDING" in reply.message
    assert client.master.GetTasklog(pb.TasklogRequest(task_id=task_id, token=alice)).log == ""
    reply = client.master.StopTask(pb.StopTaskRequest(task_id=task_id, token=alice))
    assert reply.success, reply.message
    assert task_status(client, alice, task_id).status == "STOPPED"
    reply = client.master.StopTask(pb.StopTaskRequest(task_id=task_id, token=alice))
    assert not reply.success and "already ended: STOPPED" in reply.message


def test_workers_may_not_report_on_tasks_not_given_to_them(client: Client) -> None:
    alice, bob = client.login("alice"), client.login("bob")
    task_id = new_task_id()
    assert upload(client, alice, task_id, make_zip()).success
    reply = client.worker.TaskOutputUpload(pb.TaskOutputUploadRequest(task_id=task_id, output="fake", token=bob))
    assert not reply.success and "not assigned to node 'bob'" in reply.message
    reply = client.worker.TaskUsage(pb.TaskUsageRequest(task_id=task_id, cpu_usage=50, token=bob))
    assert not reply.success
    assert client.master.GetTasklog(pb.TasklogRequest(task_id=task_id, token=alice)).log == ""


def test_worker_side_rpcs_of_the_worker_are_not_served_by_the_pool(client: Client) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        client.worker.ExecuteTask(pb.ExecuteTaskRequest(task_id="x", task_zip=make_zip()))
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
