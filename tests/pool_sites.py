"""A 2-slot worker site (the real bridge as `python -m bridge`, a Celery worker
started by the caller) joined to one of two Node Pools, behind one interface,
so the same scenarios (tests/pool_scenarios.py) and the bench run against both:

- `StandInSite`: the stand-in for the deployed pool (tests/deployed_pool_double.py,
  in this process) with its dispatch rounds on a timer;
- `OwnPoolSite`: this project's Node Pool (`python -m nodepool`, tests/e2e_kit.py).

The owner's side (upload, status, result) is plain gRPC, the same for both.
"""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
import zipfile
from datetime import datetime
from pathlib import Path

from proto import nodepool_pb2 as pb
from tests.deployed_pool_double import DeployedPoolDouble
from tests.e2e_kit import BRIDGE_TEST_INTERVALS, OWNER, SITE, Proc, Site, _clean_env
from tests.nodepool_kit import PASSWORD, Client, free_port, serving, wait_for
from tests.services_kit import make_zip

SLOTS = 2
CPU_SCORE = 100  # one core a task: a 2-core site has two slots
FINAL = {"COMPLETED", "FAILED", "STOPPED"}


def sleeper_zip(seconds: float, tag: str) -> bytes:
    return make_zip(
        {"main.py": f"import time\nprint('start {tag}', flush=True)\ntime.sleep({seconds})\nprint('done {tag}', flush=True)\n"}
    )


class PoolSite:
    """What the scenarios need of a site; subclasses say how its pool is run."""

    kind = ""
    heartbeat_interval = 1.0

    def __init__(
        self,
        tmp: Path,
        redis_url: str,
        heartbeat_interval: float | None = 1.0,
        registration_interval: float | None = 5.0,
        relay_interval: float | None = 0.5,
    ) -> None:
        """An interval of None: the bridge's shipped default (a benchmark measures those)."""
        self.tmp = tmp
        self.redis_url = redis_url
        self.heartbeat_interval = heartbeat_interval or 5.0
        self.timers = {
            "HIVEMIND_HEARTBEAT_INTERVAL": heartbeat_interval,
            "HIVEMIND_REGISTRATION_INTERVAL": registration_interval,
            "HIVEMIND_RELAY_INTERVAL": relay_interval,
        }
        self.bridge_port = free_port()
        self.bridge_restarts: list[tuple[float, float]] = []  # (stopped at, serving again at)
        self.bridge_started_at = 0.0
        self._owner: Client | None = None
        self._token = ""

    # -- to provide ----------------------------------------------------------
    @property
    def pool_address(self) -> str:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def node_heard_times(self) -> list[float]:
        """When the pool heard the node (its status reports)."""
        raise NotImplementedError

    def bridge_env(self) -> dict[str, str]:
        return {
            "REDIS_URL": self.redis_url,
            "HIVEMIND_USERNAME": SITE,
            "HIVEMIND_PASSWORD": PASSWORD,
            "HIVEMIND_BRIDGE_PORT": str(self.bridge_port),
            "HIVEMIND_BRIDGE_BIND": "127.0.0.1",
            **{name: str(value) for name, value in self.timers.items() if value is not None},
        }

    # -- the bridge ----------------------------------------------------------
    bridge: Proc

    def start_bridge(self) -> None:
        self.bridge.start()
        wait_for(lambda: serving(f"127.0.0.1:{self.bridge_port}"), timeout=30, what="the bridge serving")
        self.bridge_started_at = self.bridge_started_at or time.time()

    def restart_bridge(self) -> None:
        stopped = time.time()
        self.bridge.stop()
        self.start_bridge()
        self.bridge_restarts.append((stopped, time.time()))

    def bridge_warnings(self) -> list[str]:
        return [str(r.get("msg", "")) for r in self.bridge.log_records() if r.get("level") in ("WARNING", "ERROR")]

    # -- the owner's side ----------------------------------------------------
    def owner(self) -> tuple[Client, str]:
        if self._owner is None:
            self._owner = Client(self.pool_address.replace("localhost", "127.0.0.1"))
            self._token = self._owner.login(OWNER)
        return self._owner, self._token

    def upload(self, zip_bytes: bytes, task_id: str | None = None) -> str:
        client, token = self.owner()
        task_id = task_id or f"{self.kind}-{uuid.uuid4().hex[:10]}"
        reply = client.master.UploadTask(
            pb.UploadTaskRequest(task_id=task_id, task_zip=zip_bytes, cpu_score=CPU_SCORE, token=token), timeout=30
        )
        assert reply.success, reply.message
        return task_id

    def statuses(self) -> dict[str, pb.TaskInfo]:
        client, token = self.owner()
        return {t.task_id: t for t in client.master.GetAllUserTasks(pb.GetAllUserTasksRequest(token=token), timeout=30).tasks}

    def wait_final(self, task_ids: list[str], timeout: float = 240) -> dict[str, pb.TaskInfo]:
        def done() -> dict[str, pb.TaskInfo] | None:
            now = self.statuses()
            return now if all(now[t].status in FINAL for t in task_ids if t in now) and set(task_ids) <= set(now) else None

        wait_for(done, timeout=timeout, what=f"{len(task_ids)} tasks finished on the {self.kind} pool")
        return self.statuses()

    def wait_running(self, task_ids: list[str], timeout: float = 120) -> None:
        wait_for(
            lambda: all(self.statuses()[t].status == "RUNNING" for t in task_ids),
            timeout=timeout,
            what=f"{task_ids} RUNNING on the {self.kind} pool",
        )

    def report(self, task_id: str) -> dict:
        client, token = self.owner()
        reply = client.master.GetTaskResult(pb.GetTaskResultRequest(task_id=task_id, token=token), timeout=60)
        assert reply.success, reply.message
        with zipfile.ZipFile(io.BytesIO(reply.result_zip)) as archive:
            return json.loads(archive.read("execution_report.json"))

    def run_interval(self, task_id: str) -> tuple[float, float]:
        """When the task's job ran on the worker, from its execution report."""
        report = self.report(task_id)
        assert report["status"] == "succeeded", report
        return (
            datetime.fromisoformat(report["started_at"]).timestamp(),
            datetime.fromisoformat(report["finished_at"]).timestamp(),
        )


class StandInSite(PoolSite):
    """The bridge joined to the stand-in for the deployed pool. The deployed pool
    sends no x-hivemind-secret, so the bridge has none; the caller allowlist is the
    default (the pool's own addresses: loopback here)."""

    kind = "standin"

    def __init__(self, tmp: Path, redis_url: str, round_s: float = 1.0, **intervals: float) -> None:
        super().__init__(tmp, redis_url, **intervals)
        self.double = DeployedPoolDouble({OWNER: PASSWORD, SITE: PASSWORD}, round_s=round_s)

    @property
    def pool_address(self) -> str:
        return self.double.address

    def start(self) -> None:
        self.double.start()
        self.bridge = Proc(
            ["-m", "bridge"],
            _clean_env(HIVEMIND_NODEPOOL_ADDRESS=self.double.address, **self.bridge_env()),
            self.tmp / "bridge.log",
        )
        self.start_bridge()
        wait_for(
            lambda: (
                SITE in self.double.nodes
                and self.double.node(SITE).status == "Idle"
                and self.double.node(SITE).total["cpu_score"] == SLOTS * CPU_SCORE
            ),
            timeout=60,
            what="the site registered with two cores and Idle on the stand-in",
        )

    def stop(self) -> None:
        self.bridge.stop()
        self.double.stop()

    def node_heard_times(self) -> list[float]:
        return self.double.report_times(SITE)


class OwnPoolSite(PoolSite):
    """The bridge joined to this project's Node Pool (a `python -m nodepool` process)."""

    kind = "own"

    def __init__(self, tmp: Path, redis_url: str, test_intervals: bool = True, **intervals: float | None) -> None:
        """test_intervals=False: the pool's shipped dispatch interval and back-off."""
        super().__init__(tmp, redis_url, **intervals)
        self.site = Site(tmp, redis_url, bridge_port=self.bridge_port, test_intervals=test_intervals)
        self.bridge = self.site.bridge
        for name in BRIDGE_TEST_INTERVALS:
            self.bridge.env.pop(name, None)
        self.bridge.env.update(self.bridge_env())
        self._heard: list[float] = []
        self._watching = threading.Event()
        self._watch: threading.Thread | None = None

    @property
    def pool_address(self) -> str:
        return self.site.pool_address

    def start(self) -> None:
        self.site.cli_ok("users", "add", OWNER, "--password", PASSWORD, "--balance", "1000000")
        self.site.cli_ok("users", "add", SITE, "--password", PASSWORD)
        self.site.start_pool()
        self.start_bridge()
        wait_for(
            lambda: self.site.node_idle() and self.registered_cpu_score() == SLOTS * CPU_SCORE,
            timeout=60,
            what="the site registered with two cores and Idle on our pool",
        )
        self._watching.set()
        self._watch = threading.Thread(target=self._watch_last_seen, daemon=True)
        self._watch.start()

    def stop(self) -> None:
        self._watching.clear()
        if self._watch is not None:
            self._watch.join(timeout=5)
        self.site.stop()

    def registered_cpu_score(self) -> int:
        row = self.site.row("SELECT cpu_score FROM nodes WHERE node_id = ?", SITE)
        return -1 if row is None else int(row["cpu_score"])

    def _watch_last_seen(self) -> None:
        """Our pool keeps only the node's last_seen: sample it to learn when it heard the node."""
        last = 0.0
        while self._watching.is_set():
            row = self.site.row("SELECT last_seen FROM nodes WHERE node_id = ?", SITE)
            if row is not None and row["last_seen"] != last:
                last = row["last_seen"]
                self._heard.append(last)
            time.sleep(0.1)

    def node_heard_times(self) -> list[float]:
        return list(self._heard)
