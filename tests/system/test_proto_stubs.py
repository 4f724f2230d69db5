"""The committed gRPC stubs are current, importable as a package, and match the protocol facts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import FieldDescriptor

from proto import build
from proto import nodepool_pb2 as pb

REPO_ROOT = Path(build.__file__).resolve().parent.parent

# The wire facts of /work/shared/design/NODEPOOL-PROTOCOL.md, restated so a drifting .proto
# fails here: message -> {field name: (number, type, repeated)}.
S, B, I32, I64, F, BY = "string", "bool", "int32", "int64", "float", "bytes"
EXPECTED_MESSAGES: dict[str, dict[str, tuple[int, str]]] = {
    "LoginRequest": {"username": (1, S), "password": (2, S)},
    "LoginResponse": {"success": (1, B), "message": (2, S), "token": (3, S)},
    "TransferRequest": {"token": (1, S), "receiver_username": (2, S), "amount": (3, I64)},
    "TransferResponse": {"success": (1, B), "message": (2, S)},
    "GetBalanceRequest": {"username": (1, S), "token": (2, S)},
    "GetBalanceResponse": {"success": (1, B), "message": (2, S), "balance": (3, I64)},
    "RefreshTokenRequest": {"old_token": (1, S)},
    "RefreshTokenResponse": {"success": (1, B), "message": (2, S), "new_token": (3, S)},
    "RegisterWorkerNodeRequest": {
        "node_id": (1, S),
        "hostname": (2, S),
        "cpu_cores": (3, I32),
        "memory_gb": (4, I32),
        "cpu_score": (5, I32),
        "gpu_score": (6, I32),
        "gpu_memory_gb": (7, I32),
        "location": (8, S),
        "port": (9, I32),
        "gpu_name": (12, S),
        "docker_status": (13, S),
    },
    "StatusResponse": {"success": (1, B), "message": (2, S)},
    "RunningStatusRequest": {
        "node_id": (1, S),
        "status": (2, S),
        "cpu_usage": (3, F),
        "memory_usage": (4, F),
        "gpu_usage": (5, F),
        "gpu_memory_usage": (6, F),
        "docker_status": (7, S),
        "running_tasks": (8, I32),
    },
    "RunningStatusResponse": {"success": (1, B), "message": (2, S)},
    "UploadTaskRequest": {
        "task_id": (1, S),
        "task_zip": (2, BY),
        "memory_gb": (3, I32),
        "cpu_score": (4, I32),
        "gpu_score": (5, I32),
        "gpu_memory_gb": (6, I32),
        "location": (7, S),
        "gpu_name": (8, S),
        "token": (9, S),
    },
    "UploadTaskResponse": {"success": (1, B), "message": (2, S)},
    "GetAllUserTasksRequest": {"token": (1, S)},
    "GetAllTasksResponse": {"tasks": (1, "TaskInfo[]")},
    "TaskInfo": {
        "task_id": (1, S),
        "status": (2, S),
        "message": (4, S),
        "cpu_usage": (5, F),
        "memory_usage": (6, F),
        "gpu_usage": (7, F),
        "gpu_memory_usage": (8, F),
        "worker_ip": (9, S),
    },
    "TaskOutputUploadRequest": {"task_id": (1, S), "output": (2, S), "token": (3, S)},
    "TaskOutputUploadResponse": {"success": (1, B), "message": (2, S)},
    "TaskResultUploadRequest": {"task_id": (1, S), "result_zip": (2, BY), "token": (3, S)},
    "TaskResultUploadResponse": {"success": (1, B), "message": (2, S)},
    "GetTaskResultRequest": {"task_id": (1, S), "token": (2, S)},
    "GetTaskResultResponse": {"success": (1, B), "message": (2, S), "result_zip": (3, BY)},
    "ExecuteTaskRequest": {
        "task_id": (1, S),
        "task_zip": (2, BY),
        "cpu_usage": (3, F),
        "gpu_usage": (4, F),
        "memory_gb": (5, I32),
        "gpu_memory_gb": (6, I32),
    },
    "ExecuteTaskResponse": {"success": (1, B), "message": (2, S)},
    "TaskOutputRequest": {"task_id": (1, S), "output": (2, S), "token": (3, S)},
    "TaskOutputResponse": {"success": (1, B), "message": (2, S)},
    "StopTaskRequest": {"task_id": (1, S), "token": (2, S)},
    "StopTaskResponse": {"success": (1, B), "message": (2, S)},
    "StopTaskExecutionRequest": {"task_id": (1, S)},
    "StopTaskExecutionResponse": {"success": (1, B), "message": (2, S)},
    "TaskUsageRequest": {
        "task_id": (1, S),
        "cpu_usage": (2, F),
        "memory_usage": (3, F),
        "gpu_usage": (4, F),
        "gpu_memory_usage": (5, F),
        "token": (6, S),
    },
    "TaskUsageResponse": {"success": (1, B), "message": (2, S)},
    "TasklogRequest": {"task_id": (1, S), "token": (2, S)},
    "TasklogResponse": {"success": (1, B), "log": (2, S)},
}

EXPECTED_SERVICES: dict[str, dict[str, tuple[str, str]]] = {
    "UserService": {
        "Login": ("LoginRequest", "LoginResponse"),
        "Transfer": ("TransferRequest", "TransferResponse"),
        "GetBalance": ("GetBalanceRequest", "GetBalanceResponse"),
        "RefreshToken": ("RefreshTokenRequest", "RefreshTokenResponse"),
    },
    "NodeManagerService": {
        "RegisterWorkerNode": ("RegisterWorkerNodeRequest", "StatusResponse"),
        "ReportStatus": ("RunningStatusRequest", "RunningStatusResponse"),
    },
    "MasterNodeService": {
        "UploadTask": ("UploadTaskRequest", "UploadTaskResponse"),
        "GetTaskResult": ("GetTaskResultRequest", "GetTaskResultResponse"),
        "GetAllUserTasks": ("GetAllUserTasksRequest", "GetAllTasksResponse"),
        "StopTask": ("StopTaskRequest", "StopTaskResponse"),
        "GetTasklog": ("TasklogRequest", "TasklogResponse"),
    },
    "WorkerNodeService": {
        "ExecuteTask": ("ExecuteTaskRequest", "ExecuteTaskResponse"),
        "StopTaskExecution": ("StopTaskExecutionRequest", "StopTaskExecutionResponse"),
        "TaskOutputUpload": ("TaskOutputUploadRequest", "TaskOutputUploadResponse"),
        "TaskResultUpload": ("TaskResultUploadRequest", "TaskResultUploadResponse"),
        "TaskUsage": ("TaskUsageRequest", "TaskUsageResponse"),
        "TaskOutput": ("TaskOutputRequest", "TaskOutputResponse"),
    },
}

_TYPE_NAMES = {
    FieldDescriptor.TYPE_STRING: S,
    FieldDescriptor.TYPE_BOOL: B,
    FieldDescriptor.TYPE_INT32: I32,
    FieldDescriptor.TYPE_INT64: I64,
    FieldDescriptor.TYPE_FLOAT: F,
    FieldDescriptor.TYPE_BYTES: BY,
}


def _describe(field: FieldDescriptor) -> tuple[int, str]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        kind = field.message_type.name
    else:
        kind = _TYPE_NAMES.get(field.type, f"type#{field.type}")
    repeated = field.is_repeated
    return field.number, kind + ("[]" if repeated else "")


def test_committed_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    build.generate(tmp_path)
    stale = [
        name
        for name in build.GENERATED_FILES
        if (tmp_path / "proto" / name).read_bytes() != (REPO_ROOT / "proto" / name).read_bytes()
    ]
    assert not stale, f"stubs out of date, run `python -m proto.build`: {stale}"


def test_stubs_import_as_a_package_from_elsewhere(tmp_path: Path) -> None:
    # Run from an unrelated directory so only the package path can satisfy the import.
    code = (
        "from proto import nodepool_pb2_grpc as g; "
        "assert g.WorkerNodeServiceStub and g.add_UserServiceServicer_to_server; "
        "print(g.proto_dot_nodepool__pb2.DESCRIPTOR.package)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "nodepool"


def test_package_name_is_nodepool() -> None:
    assert pb.DESCRIPTOR.package == "nodepool"


@pytest.mark.parametrize("message_name", sorted(EXPECTED_MESSAGES))
def test_message_fields_match_the_protocol(message_name: str) -> None:
    descriptor = pb.DESCRIPTOR.message_types_by_name.get(message_name)
    assert descriptor is not None, f"message {message_name} missing"
    actual = {f.name: _describe(f) for f in descriptor.fields}
    assert actual == EXPECTED_MESSAGES[message_name]


def test_no_extra_messages() -> None:
    assert set(pb.DESCRIPTOR.message_types_by_name) == set(EXPECTED_MESSAGES)


@pytest.mark.parametrize("service_name", sorted(EXPECTED_SERVICES))
def test_service_rpcs_match_the_protocol(service_name: str) -> None:
    service = pb.DESCRIPTOR.services_by_name.get(service_name)
    assert service is not None, f"service {service_name} missing"
    actual = {
        m.name: (m.input_type.name, m.output_type.name)
        for m in service.methods
        if not m.client_streaming and not m.server_streaming
    }
    assert actual == EXPECTED_SERVICES[service_name]
    assert len(service.methods) == len(actual), "streaming RPCs are not part of the protocol"
