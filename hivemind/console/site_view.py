"""What the console reads of the site, in Redis: the mode, the tasks, their
series and outcomes, the host series, the problems, CPT, and the bridge's
standing with the Node Pool. Plain reads; no page writes through here except
stop, pause/resume and preferences."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from hivemind_celery.core import keys
from hivemind_celery.core.model import TaskOutcome
from hivemind_celery.core.settings import Settings
from hivemind_celery.observability.series import SeriesStore
from hivemind_celery.payloads.checkpoint import CheckpointPointer, CheckpointStore
from hivemind_celery.site.activity import Activity
from hivemind_celery.site.prefs import PrefsStore
from hivemind_celery.task.cancellation import request_stop
from hivemind_celery.task.idempotency import TaskGuard
from hivemind_celery.task.streams import read_output

OUTPUT_TAIL_BYTES = 4000
BALANCE_EVERY_S = 30.0


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


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

            with PoolClient(self.settings.nodepool_address, self.settings.username,
                            self.settings.password.get_secret_value(), timeout_s=3.0) as client:
                reply = client.call(client.users.GetBalance,
                                    pb.GetBalanceRequest(username=self.settings.username, token=client.token))
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
        self.series = SeriesStore(client)
        self.prefs = PrefsStore(client, settings)
        self.checkpoints = CheckpointStore(client, settings)
        self.balance = Balance(settings)

    # -- overview ----------------------------------------------------------------
    def overview(self) -> Overview:
        bridge = {_text(k): _text(v) for k, v in self.client.hgetall(keys.bridge_status()).items()}
        running = self.activity.running()
        deadlines: Any = self.client.zrange(keys.workers_by_deadline(), 0, -1, withscores=True)
        beat_interval = self.settings.registry_heartbeat_interval
        worker_beat = None
        if deadlines:
            # The registry keeps deadlines (last beat + 3 intervals) in Redis server time.
            worker_beat = max(score for _, score in deadlines) - 3 * beat_interval
        mode = self.prefs.mode()
        if mode.paused:
            state, why = "Paused", mode.reason
        elif running:
            state, why = "Busy", f"{len(running)} task{'s' if len(running) != 1 else ''} running"
        elif not deadlines:
            state, why = "Offline", "no worker is up"
        else:
            state, why = "Idle", "ready for work"
        today, total = self.activity.earned()
        balance, note = self.balance.get()
        last_beat = float(bridge["last_beat"]) if bridge.get("last_beat") else None
        joined = bool(last_beat) and time.time() - (last_beat or 0) < 3 * max(self.settings.heartbeat_interval, 5) \
            and not bridge.get("error")
        return Overview(
            joined=joined, node_id=bridge.get("node_id") or self.settings.username or "",
            pool=bridge.get("pool") or self.settings.nodepool_address, pool_status=bridge.get("status", ""),
            pool_error=bridge.get("error", ""), last_beat=last_beat, state=state, why=why,
            running=len(running), workers=len(deadlines), worker_beat=worker_beat,
            cpt_today=today, cpt_total=total, balance=balance, balance_note=note)

    # -- tasks -------------------------------------------------------------------
    def running(self) -> list[RunningTask]:
        tasks = []
        for task_id, started in self.activity.running():
            raw = self.client.get(keys.task_usage(task_id))
            try:
                usage = json.loads(raw) if raw else {}
            except ValueError:
                usage = {}
            tasks.append(RunningTask(task_id, started, self.activity.info(task_id), usage,
                                     self.series.task(task_id), self.output_tail(task_id),
                                     self.checkpoints.latest(task_id)))
        return tasks

    def output_tail(self, task_id: str) -> str:
        entries: Any = self.client.xrevrange(keys.task_output(task_id), count=8)
        data = b"".join(fields.get(b"data", b"") for _, fields in reversed(entries))
        return data[-OUTPUT_TAIL_BYTES:].decode(errors="replace")

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
        entries = []
        for raw in self.client.lrange(keys.site_problems(), 0, limit - 1):
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if isinstance(entry, dict) and (not level or entry.get("level") == level):
                entries.append(entry)
        return entries

    def read_output(self, task_id: str, after: str) -> tuple[str, bytes]:
        return read_output(self.client, task_id, after=after)
