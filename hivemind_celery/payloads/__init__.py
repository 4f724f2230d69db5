"""Zips by reference: the content-addressed store in Redis, safe reading of task
zips (a stranger's) and the result zip with its execution report. What other
packages may use is listed here."""

from __future__ import annotations

from hivemind_celery.payloads.checkpoint import CheckpointPointer, CheckpointStore
from hivemind_celery.payloads.resultzip import EXECUTION_REPORT, build_result_zip
from hivemind_celery.payloads.store import PayloadError, PayloadMissing, PayloadStore, PayloadTooLarge
from hivemind_celery.payloads.workspace import (
    SETUP_COMMAND,
    TASK_GID,
    TASK_UID,
    WorkspaceError,
    ZipLimits,
    ZipManifest,
    check_requirements,
    entry_command,
    extract_to_dir,
    inspect_zip,
    path_problem,
    setup_command,
    zip_to_tar,
)

__all__ = [
    "EXECUTION_REPORT",
    "SETUP_COMMAND",
    "TASK_GID",
    "TASK_UID",
    "CheckpointPointer",
    "CheckpointStore",
    "PayloadError",
    "PayloadMissing",
    "PayloadStore",
    "PayloadTooLarge",
    "WorkspaceError",
    "ZipLimits",
    "ZipManifest",
    "build_result_zip",
    "check_requirements",
    "entry_command",
    "extract_to_dir",
    "inspect_zip",
    "path_problem",
    "setup_command",
    "zip_to_tar",
]
