from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LoginRequest(_message.Message):
    __slots__ = ("username", "password")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    username: str
    password: str
    def __init__(self, username: _Optional[str] = ..., password: _Optional[str] = ...) -> None: ...

class LoginResponse(_message.Message):
    __slots__ = ("success", "message", "token")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    token: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class TransferRequest(_message.Message):
    __slots__ = ("token", "receiver_username", "amount")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_USERNAME_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    token: str
    receiver_username: str
    amount: int
    def __init__(self, token: _Optional[str] = ..., receiver_username: _Optional[str] = ..., amount: _Optional[int] = ...) -> None: ...

class TransferResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class GetBalanceRequest(_message.Message):
    __slots__ = ("username", "token")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    username: str
    token: str
    def __init__(self, username: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class GetBalanceResponse(_message.Message):
    __slots__ = ("success", "message", "balance")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    balance: int
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., balance: _Optional[int] = ...) -> None: ...

class RefreshTokenRequest(_message.Message):
    __slots__ = ("old_token",)
    OLD_TOKEN_FIELD_NUMBER: _ClassVar[int]
    old_token: str
    def __init__(self, old_token: _Optional[str] = ...) -> None: ...

class RefreshTokenResponse(_message.Message):
    __slots__ = ("success", "message", "new_token")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    NEW_TOKEN_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    new_token: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., new_token: _Optional[str] = ...) -> None: ...

class RegisterWorkerNodeRequest(_message.Message):
    __slots__ = ("node_id", "hostname", "cpu_cores", "memory_gb", "cpu_score", "gpu_score", "gpu_memory_gb", "location", "port", "gpu_name", "docker_status")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_GB_FIELD_NUMBER: _ClassVar[int]
    CPU_SCORE_FIELD_NUMBER: _ClassVar[int]
    GPU_SCORE_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_GB_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    GPU_NAME_FIELD_NUMBER: _ClassVar[int]
    DOCKER_STATUS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    hostname: str
    cpu_cores: int
    memory_gb: int
    cpu_score: int
    gpu_score: int
    gpu_memory_gb: int
    location: str
    port: int
    gpu_name: str
    docker_status: str
    def __init__(self, node_id: _Optional[str] = ..., hostname: _Optional[str] = ..., cpu_cores: _Optional[int] = ..., memory_gb: _Optional[int] = ..., cpu_score: _Optional[int] = ..., gpu_score: _Optional[int] = ..., gpu_memory_gb: _Optional[int] = ..., location: _Optional[str] = ..., port: _Optional[int] = ..., gpu_name: _Optional[str] = ..., docker_status: _Optional[str] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class RunningStatusRequest(_message.Message):
    __slots__ = ("node_id", "status", "cpu_usage", "memory_usage", "gpu_usage", "gpu_memory_usage", "docker_status", "running_tasks")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CPU_USAGE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USAGE_FIELD_NUMBER: _ClassVar[int]
    GPU_USAGE_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_USAGE_FIELD_NUMBER: _ClassVar[int]
    DOCKER_STATUS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_TASKS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    status: str
    cpu_usage: float
    memory_usage: float
    gpu_usage: float
    gpu_memory_usage: float
    docker_status: str
    running_tasks: int
    def __init__(self, node_id: _Optional[str] = ..., status: _Optional[str] = ..., cpu_usage: _Optional[float] = ..., memory_usage: _Optional[float] = ..., gpu_usage: _Optional[float] = ..., gpu_memory_usage: _Optional[float] = ..., docker_status: _Optional[str] = ..., running_tasks: _Optional[int] = ...) -> None: ...

class RunningStatusResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class UploadTaskRequest(_message.Message):
    __slots__ = ("task_id", "task_zip", "memory_gb", "cpu_score", "gpu_score", "gpu_memory_gb", "location", "gpu_name", "token")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ZIP_FIELD_NUMBER: _ClassVar[int]
    MEMORY_GB_FIELD_NUMBER: _ClassVar[int]
    CPU_SCORE_FIELD_NUMBER: _ClassVar[int]
    GPU_SCORE_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_GB_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    GPU_NAME_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    task_zip: bytes
    memory_gb: int
    cpu_score: int
    gpu_score: int
    gpu_memory_gb: int
    location: str
    gpu_name: str
    token: str
    def __init__(self, task_id: _Optional[str] = ..., task_zip: _Optional[bytes] = ..., memory_gb: _Optional[int] = ..., cpu_score: _Optional[int] = ..., gpu_score: _Optional[int] = ..., gpu_memory_gb: _Optional[int] = ..., location: _Optional[str] = ..., gpu_name: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class UploadTaskResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class GetAllUserTasksRequest(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class GetAllTasksResponse(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[TaskInfo]
    def __init__(self, tasks: _Optional[_Iterable[_Union[TaskInfo, _Mapping]]] = ...) -> None: ...

class TaskInfo(_message.Message):
    __slots__ = ("task_id", "status", "message", "cpu_usage", "memory_usage", "gpu_usage", "gpu_memory_usage", "worker_ip")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CPU_USAGE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USAGE_FIELD_NUMBER: _ClassVar[int]
    GPU_USAGE_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_USAGE_FIELD_NUMBER: _ClassVar[int]
    WORKER_IP_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    status: str
    message: str
    cpu_usage: float
    memory_usage: float
    gpu_usage: float
    gpu_memory_usage: float
    worker_ip: str
    def __init__(self, task_id: _Optional[str] = ..., status: _Optional[str] = ..., message: _Optional[str] = ..., cpu_usage: _Optional[float] = ..., memory_usage: _Optional[float] = ..., gpu_usage: _Optional[float] = ..., gpu_memory_usage: _Optional[float] = ..., worker_ip: _Optional[str] = ...) -> None: ...

class GetTaskResultRequest(_message.Message):
    __slots__ = ("task_id", "token")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    token: str
    def __init__(self, task_id: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class GetTaskResultResponse(_message.Message):
    __slots__ = ("success", "message", "result_zip")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RESULT_ZIP_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    result_zip: bytes
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., result_zip: _Optional[bytes] = ...) -> None: ...

class StopTaskRequest(_message.Message):
    __slots__ = ("task_id", "token")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    token: str
    def __init__(self, task_id: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class StopTaskResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class TasklogRequest(_message.Message):
    __slots__ = ("task_id", "token")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    token: str
    def __init__(self, task_id: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class TasklogResponse(_message.Message):
    __slots__ = ("success", "log")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    success: bool
    log: str
    def __init__(self, success: _Optional[bool] = ..., log: _Optional[str] = ...) -> None: ...

class ExecuteTaskRequest(_message.Message):
    __slots__ = ("task_id", "task_zip", "cpu_usage", "gpu_usage", "memory_gb", "gpu_memory_gb")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ZIP_FIELD_NUMBER: _ClassVar[int]
    CPU_USAGE_FIELD_NUMBER: _ClassVar[int]
    GPU_USAGE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_GB_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_GB_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    task_zip: bytes
    cpu_usage: float
    gpu_usage: float
    memory_gb: int
    gpu_memory_gb: int
    def __init__(self, task_id: _Optional[str] = ..., task_zip: _Optional[bytes] = ..., cpu_usage: _Optional[float] = ..., gpu_usage: _Optional[float] = ..., memory_gb: _Optional[int] = ..., gpu_memory_gb: _Optional[int] = ...) -> None: ...

class ExecuteTaskResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class StopTaskExecutionRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class StopTaskExecutionResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class TaskOutputUploadRequest(_message.Message):
    __slots__ = ("task_id", "output", "token")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    output: str
    token: str
    def __init__(self, task_id: _Optional[str] = ..., output: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class TaskOutputUploadResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class TaskResultUploadRequest(_message.Message):
    __slots__ = ("task_id", "result_zip", "token")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_ZIP_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    result_zip: bytes
    token: str
    def __init__(self, task_id: _Optional[str] = ..., result_zip: _Optional[bytes] = ..., token: _Optional[str] = ...) -> None: ...

class TaskResultUploadResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class TaskOutputRequest(_message.Message):
    __slots__ = ("task_id", "output", "token")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    output: str
    token: str
    def __init__(self, task_id: _Optional[str] = ..., output: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class TaskOutputResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class TaskUsageRequest(_message.Message):
    __slots__ = ("task_id", "cpu_usage", "memory_usage", "gpu_usage", "gpu_memory_usage", "token")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CPU_USAGE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USAGE_FIELD_NUMBER: _ClassVar[int]
    GPU_USAGE_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_USAGE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    cpu_usage: float
    memory_usage: float
    gpu_usage: float
    gpu_memory_usage: float
    token: str
    def __init__(self, task_id: _Optional[str] = ..., cpu_usage: _Optional[float] = ..., memory_usage: _Optional[float] = ..., gpu_usage: _Optional[float] = ..., gpu_memory_usage: _Optional[float] = ..., token: _Optional[str] = ...) -> None: ...

class TaskUsageResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...
