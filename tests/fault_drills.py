"""The fault drills of docs/RELIABILITY.md. Each function runs one repetition of
one fault against a real site (tests/fault_kit.py) and returns what it measured;
tests/test_faults.py runs each a few times and asserts, bench/fault_drills.py
runs them many times and writes the figures.

Every drill counts, per task, the result uploads our Node Pool received
(`uploads`: stored + ignored duplicates) and the pool's final status.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from celery.result import AsyncResult

from proto import nodepool_pb2 as pb
from proto import nodepool_pb2_grpc as pb_grpc
from tests.fault_kit import (
    WORKER_SECRET,
    RedisServer,
    SecondDockerd,
    Site,
    task_zip,
    wait_until,
)


@dataclass
class Drill:
    tasks: list[str]
    statuses: dict[str, str]
    uploads: dict[str, int]
    recover_s: float
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def completed(self) -> int:
        return sum(status == "COMPLETED" for status in self.statuses.values())

    @property
    def exactly_once(self) -> int:
        return sum(count == 1 for count in self.uploads.values())


def _drill(site: Site, ids: list[str], recover_s: float, **notes: object) -> Drill:
    now = site.statuses()
    return Drill(ids, {t: now[t].status for t in ids}, {t: site.counter.uploads(t) for t in ids}, recover_s, dict(notes))


def _running_containers(site: Site, docker_client, worker_id: str) -> int:  # type: ignore[no-untyped-def]
    return sum(c.status == "running" for c in site.containers(docker_client, worker_id))


def worker_killed(site: Site, app, docker_client, tasks: int) -> Drill:  # type: ignore[no-untyped-def]
    """SIGKILL a worker's main process and its pool children while it runs `tasks`
    containers; a second worker must finish every task, each result sent once."""
    victim = site.start_worker(app, concurrency=tasks)
    ids = site.submit(tasks, seconds=6, prefix="wk")
    wait_until(lambda: _running_containers(site, docker_client, victim.worker_id) >= tasks, 90, "the victim running every task")
    time.sleep(1)
    killed_at = time.monotonic()
    processes = site.kill_worker(victim)
    orphans = _running_containers(site, docker_client, victim.worker_id)
    survivor = site.start_worker(app, concurrency=tasks)
    last = site.wait_results(ids, timeout=240)
    left = len(site.containers(docker_client, victim.worker_id))
    survivor.stop()
    site.workers.remove(survivor)
    return _drill(site, ids, last - killed_at, processes_killed=processes, orphans_after_kill=orphans, orphans_left=left)


def bridge_killed(site: Site, app, tasks: int) -> Drill:  # type: ignore[no-untyped-def]
    """SIGKILL the bridge while tasks run, let them finish, restart it."""
    ids = site.submit(tasks, seconds=5, prefix="bk")
    site.wait_status(ids, {"RUNNING"}, 90)
    time.sleep(1)
    site.kill_bridge()
    wait_until(lambda: all(AsyncResult(t, app=app).ready() for t in ids), 120, "the tasks to finish")
    restarted_at = time.monotonic()
    site.start_bridge()
    last = site.wait_results(ids, timeout=120)
    return _drill(site, ids, last - restarted_at)


def redis_restarted(site: Site, server: RedisServer, tasks: int, down_s: float = 3.0) -> Drill:
    """Shut Redis down (append-only file written) mid-run and start it again."""
    ids = site.submit(tasks, seconds=6, prefix="rr")
    site.wait_status(ids, {"RUNNING"}, 90)
    time.sleep(1)
    server.stop()
    time.sleep(down_s)
    server.start()
    restarted_at = time.monotonic()
    last = site.wait_results(ids, timeout=240)
    return _drill(site, ids, last - restarted_at, down_s=down_s)


def pool_down(site: Site, app, tasks: int, outage_s: float) -> Drill:  # type: ignore[no-untyped-def]
    """Stop the Node Pool for `outage_s` while the tasks finish; results must come after."""
    ids = site.submit(tasks, seconds=3, prefix="pd")
    site.wait_status(ids, {"RUNNING"}, 90)
    site.stop_pool()
    down_at = time.monotonic()
    wait_until(lambda: all(AsyncResult(t, app=app).ready() for t in ids), outage_s + 60, "the tasks to finish")
    finished_in_outage = time.monotonic() - down_at < outage_s
    time.sleep(max(0.0, outage_s - (time.monotonic() - down_at)))
    site.start_pool()
    back_at = time.monotonic()
    last = site.wait_results(ids, timeout=outage_s + 120)
    return _drill(site, ids, last - back_at, outage_s=outage_s, finished_in_outage=finished_in_outage)


def dockerd_restarted(site: Site, dockerd: SecondDockerd) -> Drill:
    """Restart the worker's dockerd under a running task; then the next task must run."""
    import docker

    client = docker.DockerClient(base_url=dockerd.host, timeout=30)
    [victim] = site.submit(1, seconds=15, prefix="dr")
    wait_until(
        lambda: any(
            c.status == "running"
            for c in client.containers.list(filters={"label": [f"hivemind.task_id={victim}"]}, ignore_removed=True)
        ),
        90,
        "the task's container on the second dockerd",
    )
    time.sleep(1)
    dockerd.stop()
    dockerd.start()
    restarted_at = time.monotonic()
    site.wait_status([victim], {"COMPLETED", "FAILED"}, 120)
    [after] = site.submit(1, seconds=1, prefix="dr-after")
    last = site.wait_results([victim, after], timeout=120)
    now = site.statuses()
    client.close()
    return _drill(
        site,
        [victim, after],
        last - restarted_at,
        victim_status=now[victim].status,
        victim_message=now[victim].message,
        after_status=now[after].status,
    )


def execute_direct(site: Site, task_id: str) -> pb.ExecuteTaskResponse:
    """ExecuteTask on the bridge as the pool would call it."""
    with grpc.insecure_channel(f"127.0.0.1:{site.bridge_port}") as channel:
        stub = pb_grpc.WorkerNodeServiceStub(channel)
        return stub.ExecuteTask(
            pb.ExecuteTaskRequest(task_id=task_id, task_zip=task_zip(task_id, 1), cpu_usage=100, memory_gb=1),
            metadata=(("x-hivemind-secret", WORKER_SECRET),),
            timeout=30,
        )


def disk_filled(site: Site, registry, disk: Path, fill_mb: int, wait_s: float = 6.0) -> Drill:  # type: ignore[no-untyped-def]
    """Fill the worker's watched filesystem below its threshold: the site must say
    busy, keep a new task waiting (not failed), then run it once space is back."""
    filler = disk / "filler.bin"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M", f"count={fill_mb}"], check=True, capture_output=True)
    filled_at = time.monotonic()
    wait_until(lambda: registry.capacity().cpus_free == 0, 30, "the worker offering nothing")
    paused_s = time.monotonic() - filled_at
    refused = execute_direct(site, "disk-direct-1")
    [task] = site.submit(1, seconds=1, prefix="df")
    time.sleep(wait_s)
    waiting = site.statuses()[task].status
    filler.unlink()
    freed_at = time.monotonic()
    last = site.wait_results([task], timeout=120)
    return _drill(
        site,
        [task],
        last - freed_at,
        paused_after_s=paused_s,
        refused=not refused.success,
        refusal=refused.message,
        status_while_full=waiting,
    )


def mount_tmpfs(path: Path, size_mb: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        return False
    return (
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)], capture_output=True).returncode
        == 0
    )


def unmount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True)
