"""What checkpoints cost and what they save (docs/checkpoints.md).

1. Cost: a task that rewrites 100 MB of state every 10 s and counts busy-loop
   iterations in between, for 30 s, run by the worker's own task path
   (task/run.py's run_job: hardened container, meter, checkpointer) with
   checkpoints saved every 10 s, and the same with the worker never saving
   (interval past the task's end); rounds alternate, in the same run. The
   figures: the task's work done (iterations) and the worker process's CPU
   time, checkpoints on over off.
2. Work lost per interruption: a task of 1 s steps that checkpoints after
   each step, saved by the worker every 10 s; its container is removed at
   several moments (what a dead host does to it) and the seconds of progress
   a restart must redo are counted: without checkpoints, every step done;
   with them, the steps done since the last saved checkpoint.

Needs dockerd, a Redis (HIVEMIND_TEST_REDIS, default redis://localhost:6379;
database 62, emptied first) and the task image: `make bench` provides them.
"""

from __future__ import annotations

import os
import re
import resource
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STATE_MB = 100
os.environ.setdefault("HIVEMIND_CHECKPOINT_MAX_BYTES", str((STATE_MB + 28) * 1024 * 1024))
# database 62 of the test Redis, emptied first
os.environ["REDIS_URL"] = os.environ.get("HIVEMIND_TEST_REDIS", "redis://localhost:6379") + "/62"
os.environ.setdefault("HIVEMIND_WORKER_ID", f"bench-ckpt-{uuid.uuid4().hex[:6]}")

from bench.report import write_section  # noqa: E402
from hivemind_celery.core import keys  # noqa: E402
from hivemind_celery.core.model import TaskSpec  # noqa: E402
from hivemind_celery.core.settings import get_settings  # noqa: E402
from hivemind_celery.payloads.checkpoint import CheckpointStore  # noqa: E402
from hivemind_celery.payloads.store import PayloadStore  # noqa: E402
from hivemind_celery.task.run import redis_client, run_job, runtime  # noqa: E402

ROUNDS = 3
KILL_AT = [14.0, 19.0, 26.0]  # seconds after the task's first step
NEVER = 1e6  # an interval no run reaches: checkpoints off

HEAVY = f"""
import os, time
ckpt = os.environ["HIVEMIND_CHECKPOINT_DIR"]
block = os.urandom(1024 * 1024)
iterations, end, next_write, version = 0, time.monotonic() + 30, 0.0, 0
while time.monotonic() < end:
    if time.monotonic() >= next_write:
        version += 1
        with open("state.tmp", "wb") as f:  # beside the checkpoint directory, on the same volume
            for i in range({STATE_MB}):
                f.write(version.to_bytes(8, "little") + block[8:])
        os.replace("state.tmp", os.path.join(ckpt, "state"))
        next_write = time.monotonic() + 10
    for _ in range(10000):
        iterations += 1
print("iterations", iterations, flush=True)
"""

STEPPED = """
import os, time
ckpt = os.environ["HIVEMIND_CHECKPOINT_DIR"]
path = os.path.join(ckpt, "step")
step = int(open(path).read()) if os.path.exists(path) else 0
while step < 600:
    time.sleep(1)
    step += 1
    with open(path + ".tmp", "w") as f:
        f.write(str(step))
    os.replace(path + ".tmp", path)
    print("step", step, flush=True)
"""


def zip_of(main: str) -> bytes:
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("main.py", main)
    return out.getvalue()


def output(task_id: str) -> str:
    entries = redis_client().xrange(keys.task_output(task_id))
    return b"".join(fields[b"data"] for _, fields in entries).decode(errors="replace")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def heavy_round(store: PayloadStore, interval: float) -> tuple[int, float, int]:
    settings = get_settings().model_copy(update={"checkpoint_interval": interval})
    spec = TaskSpec(task_id=f"bench-ck-{uuid.uuid4().hex[:8]}", payload=store.put(zip_of(HEAVY)), memory_mb=512, timeout=120)
    before = cpu_seconds()
    outcome = run_job(None, spec, store, settings)
    spent = cpu_seconds() - before
    runtime().cleanup(spec.task_id)
    found = re.search(r"iterations (\d+)", outcome.log_tail)
    if outcome.status.value != "succeeded" or not found:
        raise SystemExit(f"heavy task did not finish: {outcome.status.value} {outcome.reason}")
    saved = outcome.attempts[-1].checkpoints_saved if outcome.attempts else 0
    CheckpointStore(redis_client(), settings).clear(spec.task_id)
    return int(found.group(1)), spent, saved


def interrupted(store: PayloadStore, kill_at: float) -> tuple[int, int]:
    """Steps done when the container was removed, and steps the last saved checkpoint held."""
    settings = get_settings().model_copy(update={"checkpoint_interval": 10.0})
    spec = TaskSpec(task_id=f"bench-ck-{uuid.uuid4().hex[:8]}", payload=store.put(zip_of(STEPPED)), timeout=600)

    def kill_later() -> None:
        deadline = time.monotonic() + 120
        while "step 1\n" not in output(spec.task_id) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(kill_at - 1)
        runtime().kill(spec.task_id)

    killer = threading.Thread(target=kill_later, daemon=True)
    killer.start()
    run_job(None, spec, store, settings)
    killer.join()
    runtime().cleanup(spec.task_id)
    steps = [int(n) for n in re.findall(r"^step (\d+)$", output(spec.task_id), re.MULTILINE)]
    pointer = CheckpointStore(redis_client(), settings).load(spec.task_id)
    saved = 0
    if pointer is not None:
        import io
        import zipfile

        with zipfile.ZipFile(io.BytesIO(pointer[1])) as archive:
            saved = int(archive.read("step"))
    CheckpointStore(redis_client(), settings).clear(spec.task_id)
    return max(steps, default=0), saved


def main() -> None:
    redis_client().flushdb()
    load = os.getloadavg()
    store = PayloadStore(redis_client(), get_settings())
    on: list[tuple[int, float, int]] = []
    off: list[tuple[int, float, int]] = []
    for _ in range(ROUNDS):
        off.append(heavy_round(store, NEVER))
        on.append(heavy_round(store, 10.0))
        print(f"off {off[-1]}  on {on[-1]}")
    work_on, work_off = statistics.median(r[0] for r in on), statistics.median(r[0] for r in off)
    cpu_on, cpu_off = statistics.median(r[1] for r in on), statistics.median(r[1] for r in off)
    saves = statistics.median(r[2] for r in on)
    lost = [interrupted(store, at) for at in KILL_AT]
    for at, (done, saved) in zip(KILL_AT, lost, strict=True):
        print(f"killed at {at:g} s: {done} steps done, checkpoint held {saved}")
    rows = "\n".join(f"| {at:g} s | {done} s | {done - saved} s |" for at, (done, saved) in zip(KILL_AT, lost, strict=True))
    mean_with = statistics.mean(done - saved for done, saved in lost)
    mean_without = statistics.mean(done for done, _ in lost)
    body = (
        f"**Cost.** A task rewriting {STATE_MB} MB of state every 10 s for 30 s, counting busy-loop "
        f"iterations in between, run by the worker's task path (`run_job`: hardened container, meter, "
        f"checkpointer); median of {ROUNDS} alternating rounds each.\n\n"
        f"| | task's work done (iterations) | worker process CPU | checkpoints saved |\n|---|---|---|---|\n"
        f"| checkpoints off | {work_off:,.0f} (1.00) | {cpu_off:.2f} s (1.00) | 0 |\n"
        f"| saved every 10 s | {work_on:,.0f} ({work_on / work_off:.2f}) | {cpu_on:.2f} s "
        f"({cpu_on / cpu_off:.2f}) | {saves:g} |\n\n"
        f"Worker CPU per {STATE_MB} MB checkpoint saved (read, pack, hash, store): "
        f"{(cpu_on - cpu_off) / max(saves, 1):.2f} s. Load average of the host during the run: "
        f"{load[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; on a shared host the task's work "
        f"varies from round to round by more than the checkpoints take from it (rounds: "
        f"off {', '.join(f'{r[0]:,}' for r in off)}; on {', '.join(f'{r[0]:,}' for r in on)}).\n\n"
        f"**Work lost per interruption.** A task of 1 s steps that checkpoints after each step; the "
        f"worker saves every 10 s; the container is removed (a dead host) at each moment below. A restart "
        f"redoes every step without checkpoints, and the steps since the last saved one with them.\n\n"
        f"| removed after | redone without checkpoints | redone with checkpoints |\n|---|---|---|\n"
        f"{rows}\n| mean | {mean_without:.1f} s | {mean_with:.1f} s |\n\n"
        f"Promise: at most one interval (10 s) of work lost. "
        f"{'Met' if all(done - saved <= 10 for done, saved in lost) else 'Not met'}.\n"
    )
    print(body)
    write_section(
        "checkpoint",
        "Checkpoints: cost of saving 100 MB every 10 s, and work lost per interruption",
        "scripts/with-services.sh .venv/bin/python bench/bench_checkpoint.py",
        body,
    )


if __name__ == "__main__":
    main()
