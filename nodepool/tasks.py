"""Tasks: upload, state changes, output, usage, stop, and queries for their owners.

States: PENDING -> RUNNING -> COMPLETED | FAILED | STOPPED (PENDING may also go
straight to STOPPED). Only the node a task was given to may report on it.
"""

from __future__ import annotations

import io
import re
import time
import zipfile
from dataclasses import dataclass
from enum import StrEnum

from hivemind_celery.core import TASK_ID_PATTERN
from nodepool.auth import Identity
from nodepool.errors import Refused
from nodepool.nodes import percent
from nodepool.store import Store

_TASK_ID = re.compile(TASK_ID_PATTERN)
MAX_REQUEST = 1_000_000  # resource figures above this are nonsense


class State(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"


FINAL_STATES = (State.COMPLETED, State.FAILED, State.STOPPED)


@dataclass(frozen=True)
class Request:
    memory_gb: int = 0
    cpu_score: int = 0
    gpu_score: int = 0
    gpu_memory_gb: int = 0
    location: str = ""
    gpu_name: str = ""

    @property
    def wants_gpu(self) -> bool:
        return self.gpu_score > 0 or self.gpu_memory_gb > 0


@dataclass(frozen=True)
class TaskRow:
    task_id: str
    owner_id: int
    status: str
    message: str
    node_id: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    cpu_usage: float
    memory_usage: float
    gpu_usage: float
    gpu_memory_usage: float
    worker_ip: str
    has_result: bool


_ROW_SQL = """
    SELECT t.task_id, t.owner_id, t.status, t.message, t.node_id, t.created_at, t.started_at, t.finished_at,
           t.cpu_usage, t.memory_usage, t.gpu_usage, t.gpu_memory_usage,
           COALESCE(n.hostname, '') AS worker_ip, t.result_at IS NOT NULL AS has_result
    FROM tasks t LEFT JOIN nodes n ON n.node_id = t.node_id
"""


def check_task_id(task_id: str) -> None:
    if not _TASK_ID.match(task_id):
        raise Refused(f"task_id {task_id[:40]!r} is not allowed: 1-128 of letters, digits, '_', '.', '-'")


def check_zip(data: bytes, what: str, max_bytes: int) -> None:
    """Refuse data that is too big or is not a readable zip (contents are the worker's to judge)."""
    if not data:
        raise Refused(f"{what} is empty")
    if len(data) > max_bytes:
        raise Refused(f"{what} is {len(data)} bytes, more than the limit of {max_bytes}")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if not archive.infolist():
                raise Refused(f"{what} holds no files")
    except zipfile.BadZipFile as exc:
        raise Refused(f"{what} is not a zip file ({exc})") from None


def upload(store: Store, owner: Identity, task_id: str, task_zip: bytes, request: Request, max_bytes: int) -> None:
    check_task_id(task_id)
    for name in ("memory_gb", "cpu_score", "gpu_score", "gpu_memory_gb"):
        value = getattr(request, name)
        if not 0 <= value <= MAX_REQUEST:
            raise Refused(f"{name} must be between 0 and {MAX_REQUEST}, got {value}")
    check_zip(task_zip, "task_zip", max_bytes)
    with store.transaction() as conn:
        if conn.execute("SELECT 1 FROM tasks WHERE task_id = ?", (task_id,)).fetchone():
            raise Refused(f"task {task_id!r} already exists: choose a new task_id")
        conn.execute(
            """
            INSERT INTO tasks(task_id, owner_id, status, memory_gb, cpu_score, gpu_score, gpu_memory_gb, location,
                              gpu_name, task_zip, created_at, message)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'waiting for a node')
            """,
            (
                task_id,
                owner.user_id,
                State.PENDING,
                request.memory_gb,
                request.cpu_score,
                request.gpu_score,
                request.gpu_memory_gb,
                request.location[:64],
                request.gpu_name[:128],
                task_zip,
                time.time(),
            ),
        )


def get(store: Store, task_id: str) -> TaskRow | None:
    row = store.conn.execute(_ROW_SQL + " WHERE t.task_id = ?", (task_id,)).fetchone()
    return None if row is None else TaskRow(**{**dict(row), "has_result": bool(row["has_result"])})


def owned(store: Store, owner: Identity, task_id: str) -> TaskRow:
    """The task if `owner` submitted it; the same refusal whether it is missing or someone else's."""
    task = get(store, task_id)
    if task is None or task.owner_id != owner.user_id:
        raise Refused(f"no task {task_id[:128]!r} of yours")
    return task


def assigned(store: Store, node: Identity, task_id: str) -> TaskRow:
    """The task if it was given to `node`; worker reports on other tasks are refused."""
    task = get(store, task_id)
    if task is None:
        raise Refused(f"no task {task_id[:128]!r}")
    if task.node_id != node.username:
        raise Refused(f"task {task_id!r} is not assigned to node {node.username!r}")
    return task


def of_owner(store: Store, owner: Identity) -> list[TaskRow]:
    rows = store.conn.execute(_ROW_SQL + " WHERE t.owner_id = ? ORDER BY t.created_at", (owner.user_id,))
    return [TaskRow(**{**dict(r), "has_result": bool(r["has_result"])}) for r in rows]


def pending(store: Store) -> list[tuple[str, Request, int]]:
    """(task_id, request, zip size) of PENDING tasks, oldest first."""
    rows = store.conn.execute(
        "SELECT task_id, memory_gb, cpu_score, gpu_score, gpu_memory_gb, location, gpu_name, length(task_zip) AS size"
        " FROM tasks WHERE status = ? ORDER BY created_at",
        (State.PENDING,),
    ).fetchall()
    return [
        (
            r["task_id"],
            Request(r["memory_gb"], r["cpu_score"], r["gpu_score"], r["gpu_memory_gb"], r["location"], r["gpu_name"]),
            r["size"],
        )
        for r in rows
    ]


def is_pending(store: Store, task_id: str) -> bool:
    row = store.conn.execute("SELECT status FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
    return row is not None and row["status"] == State.PENDING


def stop_was_requested(store: Store, task_id: str) -> bool:
    row = store.conn.execute("SELECT stop_requested FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
    return row is not None and bool(row["stop_requested"])


def task_zip(store: Store, task_id: str) -> bytes:
    row = store.conn.execute("SELECT task_zip FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
    if row is None:
        raise Refused(f"no task {task_id!r}")
    return bytes(row[0])


def mark_running(store: Store, task_id: str, node_id: str, message: str) -> bool:
    """PENDING -> RUNNING on `node_id`; False when the task left PENDING meanwhile (stopped)."""
    with store.transaction() as conn:
        return bool(
            conn.execute(
                "UPDATE tasks SET status = ?, node_id = ?, started_at = ?, message = ?, attempts = attempts + 1"
                " WHERE task_id = ? AND status = ?",
                (State.RUNNING, node_id, time.time(), message[:500], task_id, State.PENDING),
            ).rowcount
        )


def note_dispatch_failure(store: Store, task_id: str, node_id: str, reason: str) -> None:
    """The task stays PENDING; the reason is shown to its owner."""
    with store.transaction() as conn:
        conn.execute(
            "UPDATE tasks SET message = ?, attempts = attempts + 1 WHERE task_id = ? AND status = ?",
            (f"node {node_id} did not take it: {reason}"[:500], task_id, State.PENDING),
        )


def fail_silent(
    store: Store, now: float, silent_s: float, busy_silent_s: float, heard_since: float = 0.0
) -> list[tuple[str, str]]:
    """Fail RUNNING tasks whose node has been silent too long; returns (task_id, node_id) of those failed.
    Silence is counted from `heard_since` at the earliest (the pool's start: nodes cannot
    report to a pool that is down)."""
    failed = []
    with store.transaction() as conn:
        rows = conn.execute(
            "SELECT t.task_id, t.node_id, n.last_seen, n.status FROM tasks t LEFT JOIN nodes n ON n.node_id = t.node_id"
            " WHERE t.status = ? AND t.result_at IS NULL",
            (State.RUNNING,),
        ).fetchall()
        for row in rows:
            status = row["status"] or ""
            limit = busy_silent_s if ("Running" in status or "Executing" in status) else silent_s
            last_seen = max(row["last_seen"] or 0.0, heard_since)
            if now - last_seen > limit:
                conn.execute(
                    "UPDATE tasks SET status = ?, finished_at = ?, message = ? WHERE task_id = ? AND status = ?",
                    (State.FAILED, now, f"node {row['node_id']} silent for over {limit:.0f} s", row["task_id"], State.RUNNING),
                )
                failed.append((row["task_id"], row["node_id"]))
    return failed


def stop_pending(store: Store, task_id: str) -> bool:
    """PENDING -> STOPPED; False when it is no longer pending."""
    with store.transaction() as conn:
        return bool(
            conn.execute(
                "UPDATE tasks SET status = ?, finished_at = ?, stop_requested = 1,"
                " message = 'stopped before it started' WHERE task_id = ? AND status = ?",
                (State.STOPPED, time.time(), task_id, State.PENDING),
            ).rowcount
        )


def mark_stopped(store: Store, task_id: str, message: str) -> None:
    """A RUNNING task the node agreed to stop; its result upload may still follow."""
    with store.transaction() as conn:
        conn.execute(
            "UPDATE tasks SET status = ?, stop_requested = 1, finished_at = COALESCE(finished_at, ?), message = ?"
            " WHERE task_id = ? AND status = ?",
            (State.STOPPED, time.time(), message[:500], task_id, State.RUNNING),
        )


def append_output(store: Store, task_id: str, output: str, keep_bytes: int) -> None:
    """Add new output, keeping only the last `keep_bytes` (whole characters)."""
    with store.transaction() as conn:
        row = conn.execute("SELECT output FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        combined = (row["output"] if row else "") + output
        encoded = combined.encode("utf-8")
        if len(encoded) > keep_bytes:
            combined = encoded[-keep_bytes:].decode("utf-8", errors="ignore")
        conn.execute("UPDATE tasks SET output = ? WHERE task_id = ?", (combined, task_id))


def output_of(store: Store, task_id: str) -> str:
    row = store.conn.execute("SELECT output FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
    return "" if row is None else row["output"]


def record_usage(store: Store, task_id: str, cpu: float, memory: float, gpu: float, gpu_memory: float) -> None:
    cpu, memory, gpu, gpu_memory = percent(cpu), percent(memory), percent(gpu), percent(gpu_memory)
    with store.transaction() as conn:
        conn.execute(
            """
            UPDATE tasks SET cpu_usage = ?, memory_usage = ?, gpu_usage = ?, gpu_memory_usage = ?,
                usage_samples = usage_samples + 1, cpu_usage_sum = cpu_usage_sum + ?,
                memory_usage_sum = memory_usage_sum + ?, gpu_usage_sum = gpu_usage_sum + ?
            WHERE task_id = ?
            """,
            (cpu, memory, gpu, gpu_memory, cpu, memory, gpu, task_id),
        )


def result_zip(store: Store, task_id: str) -> bytes | None:
    row = store.conn.execute("SELECT result_zip FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
    return None if row is None or row[0] is None else bytes(row[0])
