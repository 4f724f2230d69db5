"""The fault drills, many times each, with the figures written into docs/RELIABILITY.md.

    make reliability            # all drills, full size (20 worker kills, 60 s pool outage)
    python bench/fault_drills.py --only worker --worker-rounds 1

Needs what the tests need: a Redis (HIVEMIND_TEST_REDIS, DB 40 is used and emptied),
dockerd with the task images, root for the tmpfs and the second dockerd, and a
free port for a Redis of its own (HIVEMIND_FAULT_REDIS_PORT, default 6410).
Each drill's section says how many tasks came through, how many results the
Node Pool received exactly once, and the time to recover.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
import redis  # noqa: E402

from bench.report import write_section  # noqa: E402
from hivemind_celery.celery_app import create_app  # noqa: E402
from hivemind_celery.core.settings import Settings  # noqa: E402
from hivemind_celery.site.registry import Registry  # noqa: E402
from tests import fault_drills as drills  # noqa: E402
from tests.fault_kit import BUSYBOX_IMAGE, FAST, RedisServer, SecondDockerd, Site  # noqa: E402

PAGE = ROOT / "docs" / "RELIABILITY.md"
BASE = os.environ.get("HIVEMIND_TEST_REDIS", "redis://127.0.0.1:6379")
DB = 40
COMMAND = "make reliability"


def summary(runs: list[drills.Drill], settle: dict[str, int] | None = None) -> str:
    tasks = sum(len(run.tasks) for run in runs)
    completed = sum(run.completed for run in runs)
    once = sum(run.exactly_once for run in runs)
    times = [run.recover_s for run in runs]
    lines = [
        f"- tasks through the fault: **{tasks}** in {len(runs)} repetitions",
        f"- completed at the Node Pool: **{completed} of {tasks}**",
        f"- result uploads received exactly once: **{once} of {tasks}**",
        f"- time to recover (s): median {statistics.median(times):.1f}, max {max(times):.1f}",
    ]
    if settle is not None:
        late = sum(count != 1 for count in settle.values())
        lines.append(
            f"- uploads counted again after waiting out the visibility timeout "
            f"({FAST['HIVEMIND_VISIBILITY_TIMEOUT']} s): {len(settle) - late} of {len(settle)} still exactly once"
        )
    return "\n".join(lines)


def record(name: str, title: str, body: str) -> None:
    write_section(name, title, COMMAND, body, page=PAGE, header="# Reliability\n")
    print(f"--- {title}\n{body}\n", flush=True)


def new_site(workdir: Path, redis_url: str) -> tuple[Site, object]:
    redis.Redis.from_url(redis_url).flushdb()
    site = Site(redis_url, workdir)
    site.start_pool()
    site.start_bridge()
    return site, create_app(Settings(redis_url=redis_url))


def settle(site: Site, runs: list[drills.Drill]) -> dict[str, int]:
    """Wait out the visibility timeout: a late redelivery must not send a result again."""
    time.sleep(float(FAST["HIVEMIND_VISIBILITY_TIMEOUT"]) + 10)
    return {task: site.counter.uploads(task) for run in runs for task in run.tasks}


def drill_worker(workdir: Path, url: str, rounds: int, per_round: int) -> None:
    site, app = new_site(workdir, url)
    client = docker.from_env()
    try:
        runs = [drills.worker_killed(site, app, client, per_round) for _ in range(rounds)]
        late = settle(site, runs)
        orphans = sum(int(run.notes["orphans_left"]) for run in runs)
        body = summary(runs, late) + (
            f"\n- processes SIGKILLed per kill (main + pool children): {runs[0].notes['processes_killed']}"
            f"\n- task containers left behind by the killed workers at the end: {orphans}"
            "\n- time to recover: from the SIGKILL to the last result stored by the Node Pool"
        )
        record("fault-worker-kill", "Worker SIGKILLed mid-task: figures", body)
    finally:
        site.close()


def drill_bridge(workdir: Path, url: str, rounds: int, per_round: int) -> None:
    site, app = new_site(workdir, url)
    try:
        site.start_worker(app, concurrency=per_round)
        runs = [drills.bridge_killed(site, app, per_round) for _ in range(rounds)]
        record(
            "fault-bridge-kill",
            "Bridge SIGKILLed and restarted: figures",
            summary(runs) + "\n- time to recover: from the bridge's restart to the last result stored",
        )
    finally:
        site.close()


def drill_redis(workdir: Path, rounds: int, per_round: int) -> None:
    server = RedisServer(int(os.environ.get("HIVEMIND_FAULT_REDIS_PORT", "6410")), workdir)
    server.start()
    site, app = new_site(workdir, server.url + "/0")
    try:
        site.start_worker(app, concurrency=per_round)
        runs = [drills.redis_restarted(site, server, per_round) for _ in range(rounds)]
        late = settle(site, runs)
        record(
            "fault-redis-restart",
            "Redis restarted mid-run: figures",
            summary(runs, late)
            + "\n- Redis down 3 s each time (clean shutdown, append-only file, same port)"
            + "\n- time to recover: from Redis answering again to the last result stored",
        )
    finally:
        site.close()
        server.stop()


def drill_pool(workdir: Path, url: str, rounds: int, per_round: int, outage: float) -> None:
    site, app = new_site(workdir, url)
    try:
        site.start_worker(app, concurrency=per_round)
        runs = [drills.pool_down(site, app, per_round, outage) for _ in range(rounds)]
        finished = sum(bool(run.notes["finished_in_outage"]) for run in runs)
        record(
            "fault-pool-down",
            "Node Pool down while tasks finish: figures",
            summary(runs)
            + f"\n- outage: {outage:.0f} s; repetitions whose tasks all finished during it: {finished} of {len(runs)}"
            + "\n- time to recover: from the pool serving again to the last result stored",
        )
    finally:
        site.close()


def drill_dockerd(workdir: Path, url: str, rounds: int) -> None:
    dockerd = SecondDockerd()
    if not dockerd.answers():
        dockerd.start()
    dockerd.ensure_image(BUSYBOX_IMAGE)
    site, app = new_site(workdir, url)
    try:
        site.start_worker(app, concurrency=1, DOCKER_HOST=dockerd.host)
        runs = [drills.dockerd_restarted(site, dockerd) for _ in range(rounds)]
        outcomes = sorted({f"{run.notes['victim_status']}: {run.notes['victim_message']}" for run in runs})
        served = sum(run.notes["after_status"] == "COMPLETED" for run in runs)
        once = sum(run.exactly_once for run in runs)
        times = [run.recover_s for run in runs]
        body = "\n".join(
            [
                f"- repetitions: **{len(runs)}**; the task under the restart ended as:",
                *[f"  - `{text}`" for text in outcomes],
                f"- the next task on the same worker completed: **{served} of {len(runs)}**",
                f"- result uploads exactly once (both tasks): **{once} of {2 * len(runs)}**",
                f"- time from dockerd back to the next task's result (s): median {statistics.median(times):.1f}, "
                f"max {max(times):.1f}",
            ]
        )
        record("fault-dockerd-restart", "dockerd restarted under a task: figures", body)
    finally:
        site.close()


def drill_disk(workdir: Path, url: str, rounds: int) -> None:
    disk = workdir / "disk"
    if not drills.mount_tmpfs(disk, 32):
        record("fault-disk-full", "Disk nearly full: figures", "- not run: cannot mount a tmpfs here")
        return
    site, app = new_site(workdir, url)
    try:
        site.start_worker(app, concurrency=1, HIVEMIND_MONITOR_DISK_PATH=str(disk), HIVEMIND_HEALTH_MIN_DISK_FREE_MB="16")
        registry = Registry(redis.Redis.from_url(url))
        drills.wait_until(lambda: registry.capacity().cpus_free > 0, 30, "the worker offering its CPUs")
        runs = []
        for _ in range(rounds):
            runs.append(drills.disk_filled(site, registry, disk, fill_mb=24))
            drills.wait_until(lambda: registry.capacity().cpus_free > 0, 30, "the worker back")
        refused = sum(bool(run.notes["refused"]) and "disk nearly full" in str(run.notes["refusal"]) for run in runs)
        waiting = sum(run.notes["status_while_full"] == "PENDING" for run in runs)
        paused = [float(run.notes["paused_after_s"]) for run in runs]  # type: ignore[arg-type]
        body = summary(runs) + "\n".join(
            [
                "",
                "- a 32 MiB tmpfs as HIVEMIND_MONITOR_DISK_PATH, threshold 16 MiB, filled with 24 MiB",
                f"- ExecuteTask refused naming the full disk: **{refused} of {len(runs)}**; example: "
                f"`{runs[0].notes['refusal']}`",
                f"- task submitted meanwhile still PENDING (not failed) 6 s later: **{waiting} of {len(runs)}**",
                f"- seconds from the disk filling to the worker offering nothing: max {max(paused):.1f}",
                "- time to recover: from the space freed to that task's result stored",
            ]
        )
        record("fault-disk-full", "Disk nearly full: figures", body)
    finally:
        site.close()
        drills.unmount(disk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=["worker", "bridge", "redis", "pool", "dockerd", "disk"])
    parser.add_argument("--worker-rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--outage", type=float, default=60.0)
    args = parser.parse_args()
    url = f"{BASE}/{DB}"
    with tempfile.TemporaryDirectory(prefix="hm-faults-") as tmp:
        for name in args.only:
            workdir = Path(tmp) / name
            workdir.mkdir()
            if name == "worker":
                drill_worker(workdir, url, args.worker_rounds, args.per_round)
            elif name == "bridge":
                drill_bridge(workdir, url, args.rounds, args.per_round)
            elif name == "redis":
                drill_redis(workdir, args.rounds, args.per_round)
            elif name == "pool":
                drill_pool(workdir, url, max(1, args.rounds - 1), args.per_round, args.outage)
            elif name == "dockerd":
                drill_dockerd(workdir, url, args.rounds)
            elif name == "disk":
                drill_disk(workdir, url, args.rounds)


if __name__ == "__main__":
    main()
