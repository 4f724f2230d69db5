"""What the console shows of the site, asked of the packages that keep it: the
registry (live workers), activity (running and ended tasks, CPT), the task
guard (outcomes), the series, the problems, the prefs (mode) and the bridge's
standing with the Node Pool. The console knows no Redis key. No page writes
through here except stop, pause/resume and preferences."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from hivemind_celery.core import Settings, TaskOutcome
from hivemind_celery.observability import SeriesStore, recent_problems
from hivemind_celery.payloads import CheckpointPointer, CheckpointStore
from hivemind_celery.site import Activity, PrefsStore, Registry, read_standing
from hivemind_celery.task import TaskGuard, output_tail, request_stop

OUTPUT_TAIL_BYTES = 4000
BALANCE_EVERY_S = 30.0


@dataclass
class Overview:
    joined: bool
    node_id: str
    pool: str
    pool_status: str
    pool_error: str
    last_beat: float | None
    state: str  # Idle, Busy, Paused or Offline (no worker up)
    why: str
    running: int
    workers: int
    worker_beat: float | None
    cpt_today: int
    cpt_total: int
    balance: int | None
    balance_note: str
    tunnel: str = ""  # up, recovering or down; empty: the site uses no tunnel
    tunnel_address: str = ""
    tunnel_network: str = ""
    tunnel_handshake_at: float | None = None


@dataclass
class RunningTask:
    task_id: str
    started: float
    info: dict[str, Any]
    usage: dict[str, Any]
    series: list[dict[str, Any]]
    output_tail: str
    checkpoint: CheckpointPointer | None = None  # its last saved checkpoint: progress, saved_at


@dataclass
class HistoryRow:
    task_id: str
    ended: float
    outcome: TaskOutcome | None
    info: dict[str, Any] = field(default_factory=dict)


class Balance:
    """The site account's CPT balance from the Node Pool, asked at most every
    BALANCE_EVERY_S (the pool may be away; the page never waits long for it)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._at = 0.0
        self.value: int | None = None
        self.note = "not asked yet"

    def get(self) -> tuple[int | None, str]:
        with self._lock:
            if time.monotonic() - self._at >= BALANCE_EVERY_S:
                self._at = time.monotonic()
                self._ask()
            return self.value, self.note

    def _ask(self) -> None:
        if not self.settings.username or not self.settings.password.get_secret_value():
            self.value, self.note = None, "no Node Pool account configured"
            return
        try:
            from hivemind.pool_client import PoolClient, PoolError
            from proto import nodepool_pb2 as pb

            with PoolClient(
                self.settings.nodepool_address, self.settings.username, self.settings.password.get_secret_value(), timeout_s=3.0
            ) as client:
                reply = client.call(
                    client.users.GetBalance, pb.GetBalanceRequest(username=self.settings.username, token=client.token)
                )
            if reply.success:
                self.value, self.note = int(reply.balance), ""
            else:
                self.value, self.note = None, f"the pool says: {reply.message}"
        except (PoolError, OSError) as exc:
            self.value, self.note = None, f"pool unreachable ({exc})"[:160]


class SiteView:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.activity = Activity(client)
        self.registry = Registry(client, heartbeat_interval=settings.registry_heartbeat_interval)
        self.series = SeriesStore(client)
        self.prefs = PrefsStore(client, settings)
        self.checkpoints = CheckpointStore(client, settings)
        self.balance = Balance(settings)

    # -- overview ----------------------------------------------------------------
    def overview(self) -> Overview:
        standing = read_standing(self.client)
        running = self.activity.running()
        live = self.registry.liveness()
        mode = self.prefs.mode()
        if mode.paused:
            state, why = "Paused", mode.reason
        elif running:
            state, why = "Busy", f"{len(running)} task{'s' if len(running) != 1 else ''} running"
        elif not live.workers:
            state, why = "Offline", "no worker is up"
        else:
            state, why = "Idle", "ready for work"
        today, total = self.activity.earned()
        balance, note = self.balance.get()
        return Overview(
            joined=standing.joined(self.settings.heartbeat_interval),
            node_id=standing.node_id or self.settings.username or "",
            pool=standing.pool or self.settings.nodepool_address,
            pool_status=standing.status,
            pool_error=standing.error,
            last_beat=standing.last_beat,
            state=state,
            why=why,
            running=len(running),
            workers=live.workers,
            worker_beat=live.last_heartbeat,
            cpt_today=today,
            cpt_total=total,
            balance=balance,
            balance_note=note,
            tunnel=standing.tunnel,
            tunnel_address=standing.tunnel_address,
            tunnel_network=standing.tunnel_network,
            tunnel_handshake_at=standing.tunnel_handshake_at,
        )

    # -- tasks -------------------------------------------------------------------
    def running(self) -> list[RunningTask]:
        return [
            RunningTask(
                task_id,
                started,
                self.activity.info(task_id),
                self.activity.usage(task_id),
                self.series.task(task_id),
                self.output_tail(task_id),
                self.checkpoints.latest(task_id),
            )
            for task_id, started in self.activity.running()
        ]

    def output_tail(self, task_id: str) -> str:
        return output_tail(self.client, task_id, max_bytes=OUTPUT_TAIL_BYTES)

    def history(self, outcome: str = "", limit: int = 100) -> list[HistoryRow]:
        rows = []
        for task_id, ended in self.activity.history(limit=limit if not outcome else 500):
            stored = TaskGuard(self.client, task_id).stored_outcome()
            if outcome and (stored is None or stored.status.value != outcome):
                continue
            rows.append(HistoryRow(task_id, ended, stored, self.activity.info(task_id)))
            if len(rows) >= limit:
                break
        return rows

    def outcome(self, task_id: str) -> TaskOutcome | None:
        return TaskGuard(self.client, task_id).stored_outcome()

    def stop(self, task_id: str) -> None:
        request_stop(self.client, task_id)

    # -- machine and problems ------------------------------------------------------
    def hosts(self) -> list[str]:
        return self.series.hosts()

    def host_series(self, worker_id: str) -> list[dict[str, Any]]:
        return self.series.host(worker_id)

    def problems(self, limit: int = 200, level: str = "") -> list[dict[str, Any]]:
        return recent_problems(self.client, limit, level)
