"""Task results and the CPT ledger.

A result upload ends a task and pays for it in one transaction: the first
upload wins, later ones are acknowledged and ignored, so a worker that sends
twice (at-least-once delivery) is never paid twice.

The pay is `hivemind_celery.core.reward.compute_reward` of figures the pool checks
itself: the worker's `execution_report.json` is read, but its duration is
capped by the pool's own RUNNING-to-result wall time and its percentages are
clamped to 0..100. Without a readable report the pool uses the mean of the
TaskUsage samples it received; with neither it pays the policy's minimum.
The owner pays what they can (a balance never goes negative); the ledger
records what was due and what was paid.
"""

from __future__ import annotations

import io
import json
import logging
import math
import sqlite3
import time
import zipfile
from dataclasses import dataclass
from datetime import datetime

from hivemind_celery.core import RewardPolicy, compute_reward
from nodepool.auth import Identity
from nodepool.nodes import percent
from nodepool.store import Store
from nodepool.tasks import State, assigned, check_zip

log = logging.getLogger("hivemind.nodepool.results")

REPORT_NAME = "execution_report.json"
MAX_REPORT_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Payment:
    task_id: str
    amount_due: int
    amount_paid: int
    duration_s: float
    cpu_percent: float
    memory_percent: float
    gpu_percent: float
    source: str  # "report", "samples" or "minimum"


def read_report(result: bytes) -> dict | None:
    """The execution report inside a result zip, or None when absent or unreadable."""
    try:
        with zipfile.ZipFile(io.BytesIO(result)) as archive:
            info = archive.getinfo(REPORT_NAME)
            if info.file_size > MAX_REPORT_BYTES:
                return None
            with archive.open(info) as handle:
                data = handle.read(MAX_REPORT_BYTES + 1)
        if len(data) > MAX_REPORT_BYTES:
            return None  # the header lied about the size
        report = json.loads(data)
    except (KeyError, zipfile.BadZipFile, ValueError, RuntimeError, OSError, EOFError):
        return None
    return report if isinstance(report, dict) else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def report_duration(report: dict) -> float | None:
    for key in ("duration_s", "duration"):
        value = _number(report.get(key))
        if value is not None:
            return max(0.0, value)
    try:
        started = datetime.fromisoformat(str(report["started_at"]))
        finished = datetime.fromisoformat(str(report["finished_at"]))
        return max(0.0, (finished - started).total_seconds())
    except (KeyError, ValueError, TypeError):
        return None


def _final_state(report: dict | None, current: str) -> tuple[State, str]:
    if current == State.STOPPED:
        return State.STOPPED, "stopped; result received"
    if report is None:
        return State.COMPLETED, "result received (no execution report)"
    status = str(report.get("status", ""))[:32]
    reason = str(report.get("reason", ""))[:300]
    if status == "succeeded":
        return State.COMPLETED, "succeeded"
    return State.FAILED, f"{status or 'unknown status'}: {reason}" if reason else (status or "unknown status")


def _assess(
    report: dict | None, wall_s: float, samples: tuple[int, float, float, float]
) -> tuple[float, float, float, float, str]:
    """(duration, cpu %, memory %, gpu %, source) the pool accepts for paying."""
    count, cpu_sum, mem_sum, gpu_sum = samples
    means = (cpu_sum / count, mem_sum / count, gpu_sum / count) if count else None
    if report is not None:
        claimed = report_duration(report)
        duration = min(claimed, wall_s) if claimed is not None else wall_s
        usage = report["usage"] if isinstance(report.get("usage"), dict) else {}
        figures = []
        for index, key in enumerate(("cpu_percent", "memory_percent", "gpu_percent")):
            value = _number(usage.get(key))
            if value is None:
                value = means[index] if means else 0.0
            figures.append(percent(value))
        return duration, figures[0], figures[1], figures[2], "report"
    if means is not None:
        return wall_s, percent(means[0]), percent(means[1]), percent(means[2]), "samples"
    return 0.0, 0.0, 0.0, 0.0, "minimum"


def accept_result(
    store: Store, node: Identity, task_id: str, result: bytes, max_bytes: int, policy: RewardPolicy
) -> tuple[bool, Payment | None]:
    """Store the first result of a task and pay for it. Returns (stored, payment);
    stored is False for a duplicate, which changes nothing."""
    check_zip(result, "result_zip", max_bytes)
    report = read_report(result)
    now = time.time()
    with store.transaction() as conn:
        assigned(store, node, task_id)  # same connection: inside this transaction
        row = conn.execute(
            "SELECT status, owner_id, started_at, result_at, usage_samples, cpu_usage_sum, memory_usage_sum,"
            " gpu_usage_sum FROM tasks WHERE task_id = ?",
            (task_id,),
        ).fetchone()
        if row["result_at"] is not None:
            return False, None
        state, message = _final_state(report, row["status"])
        conn.execute(
            # The task zip is no longer needed once a result is in: free its space.
            "UPDATE tasks SET result_zip = ?, result_at = ?, status = ?, message = ?,"
            " finished_at = COALESCE(finished_at, ?), task_zip = x'' WHERE task_id = ?",
            (sqlite3.Binary(result), now, state, message, now, task_id),
        )
        wall_s = max(0.0, now - row["started_at"]) if row["started_at"] else 0.0
        samples = (row["usage_samples"], row["cpu_usage_sum"], row["memory_usage_sum"], row["gpu_usage_sum"])
        duration, cpu, memory, gpu, source = _assess(report, wall_s, samples)
        due = policy.minimum if source == "minimum" else compute_reward(duration, cpu, memory, gpu, policy)
        payment = _pay(conn, task_id, row["owner_id"], node.user_id, due, duration, cpu, memory, gpu, source, now)
    log.info(
        "result stored: %s, paid %d of %d CPT (%s)",
        state,
        payment.amount_paid,
        payment.amount_due,
        source,
        extra={"task_id": task_id, "node_id": node.username},
    )
    return True, payment


def _pay(
    conn: sqlite3.Connection,
    task_id: str,
    payer_id: int,
    payee_id: int,
    due: int,
    duration: float,
    cpu: float,
    memory: float,
    gpu: float,
    source: str,
    now: float,
) -> Payment:
    balance = conn.execute("SELECT balance FROM users WHERE id = ?", (payer_id,)).fetchone()[0]
    paid = min(due, int(balance)) if payer_id != payee_id else due
    if payer_id != payee_id:
        conn.execute("UPDATE users SET balance = balance - ? WHERE id = ?", (paid, payer_id))
        conn.execute("UPDATE users SET balance = balance + ? WHERE id = ?", (paid, payee_id))
    # task_id is the ledger's primary key: a second payment for a task cannot be written.
    conn.execute(
        "INSERT INTO ledger(task_id, payer_id, payee_id, amount_due, amount_paid, duration_s, cpu_percent,"
        " memory_percent, gpu_percent, source, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (task_id, payer_id, payee_id, due, paid, duration, cpu, memory, gpu, source, now),
    )
    return Payment(task_id, due, paid, duration, cpu, memory, gpu, source)


def payment_for(store: Store, task_id: str) -> Payment | None:
    row = store.conn.execute(
        "SELECT task_id, amount_due, amount_paid, duration_s, cpu_percent, memory_percent, gpu_percent, source"
        " FROM ledger WHERE task_id = ?",
        (task_id,),
    ).fetchone()
    return None if row is None else Payment(**dict(row))
