"""Worker nodes: registration, heartbeats, and which nodes may take a task.

A node is owned by the user whose name is its node_id (the worker logs in
with its own account). Registration and status reports refresh `last_seen`,
which liveness and dispatch read.

Capacity, as the deployed pool keeps it: a node registers its total capacity;
what is left for dispatch is that total less the requests of the tasks it
holds (RUNNING, or STOPPED with its result still to come) and of the
ExecuteTask calls in flight to it (`reserved_*`). A task's request comes back
when its result arrives (or it fails), never because of a heartbeat or a
re-registration, so a node re-registering the same totals while tasks run
is offered exactly the room it has.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from nodepool.auth import Identity
from nodepool.errors import Refused
from nodepool.store import Store

MAX_CAPACITY = 1_000_000  # any figure above this is nonsense, not capacity
LOOPBACK_HOSTS = {"127.0.0.1", ""}

IDLE = "Idle"  # the only status dispatched to (the deployed pool's exact spelling)


@dataclass(frozen=True)
class Registration:
    node_id: str
    hostname: str
    port: int
    cpu_cores: int = 0
    memory_gb: int = 0
    cpu_score: int = 0
    gpu_score: int = 0
    gpu_memory_gb: int = 0
    location: str = ""
    gpu_name: str = ""
    docker_status: str = ""


@dataclass(frozen=True)
class StatusReport:
    node_id: str
    status: str
    cpu_usage: float = 0.0
    memory_usage: float = 0.0
    gpu_usage: float = 0.0
    gpu_memory_usage: float = 0.0
    docker_status: str = ""
    running_tasks: int = 0


@dataclass(frozen=True)
class Node:
    node_id: str
    user_id: int
    hostname: str
    port: int
    status: str
    memory_gb: int
    cpu_score: int
    gpu_score: int
    gpu_memory_gb: int
    gpu_name: str
    last_seen: float
    gpu_capable: bool | None = None  # from the totals; None: read it from the figures above

    @property
    def address(self) -> str:
        host = self.hostname
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # IPv6 literal
        return f"{host}:{self.port}"

    @property
    def has_gpu(self) -> bool:
        if self.gpu_capable is not None:
            return self.gpu_capable
        return self.gpu_score > 0 or self.gpu_memory_gb > 0


def percent(value: float) -> float:
    """Clamp a reported percentage to 0..100; NaN and infinities count as 0."""
    value = float(value)
    return min(100.0, max(0.0, value)) if math.isfinite(value) else 0.0


def _check_owner(identity: Identity, node_id: str) -> None:
    if node_id != identity.username:
        raise Refused(f"node_id {node_id!r} must equal the logged-in user name {identity.username!r}")


def register(store: Store, identity: Identity, reg: Registration) -> None:
    _check_owner(identity, reg.node_id)
    if not 0 < reg.port <= 65535:
        raise Refused(f"port {reg.port} is not a TCP port")
    if len(reg.hostname) > 253 or any(c.isspace() or c in "/@" for c in reg.hostname):
        raise Refused(f"hostname {reg.hostname[:64]!r} is not a host name or address")
    figures = {
        "cpu_cores": reg.cpu_cores,
        "memory_gb": reg.memory_gb,
        "cpu_score": reg.cpu_score,
        "gpu_score": reg.gpu_score,
        "gpu_memory_gb": reg.gpu_memory_gb,
    }
    for name, value in figures.items():
        if not 0 <= value <= MAX_CAPACITY:
            raise Refused(f"{name} must be between 0 and {MAX_CAPACITY}, got {value}")
    now = time.time()
    with store.transaction() as conn:
        conn.execute(
            """
            INSERT INTO nodes(node_id, user_id, hostname, port, cpu_cores, memory_gb, cpu_score, gpu_score,
                              gpu_memory_gb, gpu_name, location, docker_status, registered_at, last_seen)
            VALUES (:node_id, :user_id, :hostname, :port, :cpu_cores, :memory_gb, :cpu_score, :gpu_score,
                    :gpu_memory_gb, :gpu_name, :location, :docker_status, :now, :now)
            ON CONFLICT(node_id) DO UPDATE SET
                user_id = excluded.user_id, hostname = excluded.hostname, port = excluded.port,
                cpu_cores = excluded.cpu_cores, memory_gb = excluded.memory_gb,
                cpu_score = excluded.cpu_score, gpu_score = excluded.gpu_score,
                gpu_memory_gb = excluded.gpu_memory_gb, gpu_name = excluded.gpu_name,
                location = excluded.location, docker_status = excluded.docker_status,
                last_seen = excluded.last_seen
            """,
            {**reg.__dict__, "user_id": identity.user_id, "now": now},
        )


def report_status(store: Store, identity: Identity, report: StatusReport) -> None:
    _check_owner(identity, report.node_id)
    with store.transaction() as conn:
        changed = conn.execute(
            """
            UPDATE nodes SET status = ?, cpu_usage = ?, memory_usage = ?, gpu_usage = ?, gpu_memory_usage = ?,
                docker_status = ?, running_tasks = ?, last_seen = ?,
                backoff_until = CASE WHEN backoff_ends_on_report AND ? = 'Idle' THEN 0 ELSE backoff_until END,
                backoff_ends_on_report = CASE WHEN ? = 'Idle' THEN 0 ELSE backoff_ends_on_report END
            WHERE node_id = ?
            """,
            (
                report.status[:64],
                percent(report.cpu_usage),
                percent(report.memory_usage),
                percent(report.gpu_usage),
                percent(report.gpu_memory_usage),
                report.docker_status[:64],
                max(0, report.running_tasks),
                time.time(),
                report.status,
                report.status,
                report.node_id,
            ),
        ).rowcount
    if not changed:
        raise Refused(f"node {report.node_id!r} is not registered: call RegisterWorkerNode first")


def record_node_usage(store: Store, node_id: str, cpu: float, memory: float, gpu: float, gpu_memory: float) -> None:
    """Node-level usage (TaskUsage with task_id "0"); also counts as a sign of life."""
    with store.transaction() as conn:
        conn.execute(
            "UPDATE nodes SET cpu_usage = ?, memory_usage = ?, gpu_usage = ?, gpu_memory_usage = ?, last_seen = ?"
            " WHERE node_id = ?",
            (percent(cpu), percent(memory), percent(gpu), percent(gpu_memory), time.time(), node_id),
        )


def dispatchable(store: Store, fresh_s: float, refuse_loopback: bool, now: float | None = None) -> list[Node]:
    """Nodes that may be sent work now: status exactly `Idle`, recently heard from, not backing off.
    Capacities returned are what is left: the registered totals less the tasks the node
    holds and the calls in flight to it. `has_gpu` is read from the totals."""
    now = time.time() if now is None else now
    rows = store.conn.execute(
        """
        SELECT n.node_id, n.user_id, n.hostname, n.port, n.status, n.last_seen, n.gpu_name,
               n.memory_gb - n.reserved_memory_gb - COALESCE(SUM(t.memory_gb), 0) AS memory_gb,
               n.cpu_score - n.reserved_cpu_score - COALESCE(SUM(t.cpu_score), 0) AS cpu_score,
               n.gpu_score - n.reserved_gpu_score - COALESCE(SUM(t.gpu_score), 0) AS gpu_score,
               n.gpu_memory_gb - n.reserved_gpu_memory_gb - COALESCE(SUM(t.gpu_memory_gb), 0) AS gpu_memory_gb,
               n.gpu_score > 0 OR n.gpu_memory_gb > 0 AS gpu_total
        FROM nodes n LEFT JOIN tasks t
            ON t.node_id = n.node_id AND t.result_at IS NULL AND t.status IN ('RUNNING', 'STOPPED')
        WHERE n.status = 'Idle' AND n.last_seen > ? AND n.backoff_until <= ?
        GROUP BY n.node_id
        ORDER BY n.last_seen DESC
        """,
        (now - fresh_s, now),
    ).fetchall()
    nodes = [
        Node(**{k: row[k] for k in row.keys() if k != "gpu_total"}, gpu_capable=bool(row["gpu_total"]))  # noqa: SIM118 - a sqlite3.Row iterates its values
        for row in rows
    ]
    if refuse_loopback:
        nodes = [n for n in nodes if n.hostname.strip() not in LOOPBACK_HOSTS]
    return [n for n in nodes if n.hostname.strip()]  # an empty host cannot be dialled at all


def reserve(store: Store, node_id: str, memory_gb: int, cpu_score: int, gpu_score: int, gpu_memory_gb: int) -> None:
    """Add to (or, with negative figures, release from) what the calls in flight to the node hold."""
    with store.transaction() as conn:
        conn.execute(
            # MAX(0, ...): a release after a restart cleared the reservations must not go negative.
            "UPDATE nodes SET reserved_memory_gb = MAX(0, reserved_memory_gb + ?),"
            " reserved_cpu_score = MAX(0, reserved_cpu_score + ?), reserved_gpu_score = MAX(0, reserved_gpu_score + ?),"
            " reserved_gpu_memory_gb = MAX(0, reserved_gpu_memory_gb + ?) WHERE node_id = ?",
            (memory_gb, cpu_score, gpu_score, gpu_memory_gb, node_id),
        )


def clear_in_flight(store: Store) -> None:
    """At start: no ExecuteTask call is in flight, whatever a crash left behind."""
    with store.transaction() as conn:
        conn.execute(
            "UPDATE nodes SET reserved_memory_gb = 0, reserved_cpu_score = 0, reserved_gpu_score = 0, reserved_gpu_memory_gb = 0"
        )


def back_off(store: Store, node_id: str, seconds: float, until_idle_report: bool = False) -> None:
    """No tasks for the node for `seconds`; with until_idle_report, only until it
    next reports Idle (it said no to a task, so it knows its room best: a
    refusal is often a race between a dispatch and the node's last report)."""
    with store.transaction() as conn:
        conn.execute(
            "UPDATE nodes SET backoff_until = ?, backoff_ends_on_report = ? WHERE node_id = ?",
            (time.time() + seconds, int(until_idle_report), node_id),
        )


def get_node(store: Store, node_id: str) -> Node | None:
    row = store.conn.execute(
        "SELECT node_id, user_id, hostname, port, status, memory_gb, cpu_score, gpu_score, gpu_memory_gb,"
        " gpu_name, last_seen FROM nodes WHERE node_id = ?",
        (node_id,),
    ).fetchone()
    return None if row is None else Node(**dict(row))
