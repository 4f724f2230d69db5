"""The counting task of the checkpoint tests and what they check it with: shared
by tests/task/test_checkpoint_resume.py (a worker killed or stopped) and
tests/task/test_checkpoint_host_lost.py (a whole worker host lost)."""

from __future__ import annotations

import io
import json
import uuid
import zipfile

from celery.result import AsyncResult

from hivemind_celery.core import keys
from hivemind_celery.core.model import TASK_NAME, TaskOutcome, TaskSpec
from tests.services_kit import make_zip

STEPS = 24
# Each step burns CPU for a while (so every attempt has CPU-seconds to count),
# adds its number to the sum and, in "each" mode, checkpoints (write, then
# rename) with its progress. In "term" mode the state is written only when
# SIGTERM comes (the grace period), in "never" mode not at all.
COUNTER = r"""
import json, os, signal, sys, time
ckpt = os.environ["HIVEMIND_CHECKPOINT_DIR"]
mode = open("mode.txt").read().strip()
state_file = os.path.join(ckpt, "state.json")
state = {"next": 1, "sum": 0}
if mode != "never" and os.path.exists(state_file):
    with open(state_file) as f:
        state = json.load(f)
first = state["next"]
print(f"starting at step {first}", flush=True)

def save():
    tmp = state_file + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, state_file)
    with open(os.path.join(ckpt, "progress.tmp"), "w") as f:
        f.write(str((state["next"] - 1) / STEPS))
    os.replace(os.path.join(ckpt, "progress.tmp"), os.path.join(ckpt, "progress"))

def on_term(signum, frame):
    if mode != "never":
        save()
        print(f"checkpointed at step {state['next']} on SIGTERM", flush=True)
    sys.exit(143)

signal.signal(signal.SIGTERM, on_term)
while state["next"] <= STEPS:
    until = time.monotonic() + 0.4
    while time.monotonic() < until:
        pass
    state = {"next": state["next"] + 1, "sum": state["sum"] + state["next"]}
    if mode == "each":
        save()
    print(f"step {state['next'] - 1}", flush=True)
with open("result.json", "w") as f:
    json.dump({"sum": state["sum"], "first": first}, f)
""".replace("STEPS", str(STEPS))
RIGHT_SUM = STEPS * (STEPS + 1) // 2
# Short limits, as in the fault drills: a dead worker is seen as gone within
# seconds, its task's lock lapses in 6 s.
FAST = {
    "HIVEMIND_TASK_LOCK_TTL": "6",
    "HIVEMIND_REGISTRY_HEARTBEAT_INTERVAL": "1",
    "HIVEMIND_RESCUE_INTERVAL": "2",
    "HIVEMIND_SHUTDOWN_GRACE": "10",
}


def submit(celery_app, store, mode: str) -> tuple[TaskSpec, AsyncResult]:
    spec = TaskSpec(
        task_id=f"ck-{mode}-{uuid.uuid4().hex[:8]}",
        timeout=300,
        payload=store.put(make_zip({"main.py": COUNTER, "mode.txt": mode})),
    )
    result = celery_app.send_task(TASK_NAME, args=[spec.model_dump(mode="json")], task_id=spec.task_id, queue="cpu")
    return spec, result


def output_of(redis_client, task_id: str) -> str:
    entries = redis_client.xrange(keys.task_output(task_id))
    return b"".join(fields[b"data"] for _, fields in entries).decode(errors="replace")


def result_file(store, outcome: TaskOutcome, name: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(store.get(outcome.result_ref))) as archive:
        return archive.read(name)


def result_json(store, outcome: TaskOutcome) -> dict:
    return json.loads(result_file(store, outcome, "result.json"))


def check_accounting(outcome: TaskOutcome) -> None:
    """Every attempt measured; the reward is theirs added up; the last is this run's."""
    assert all(a.cpu_seconds > 0 for a in outcome.attempts), outcome.attempts
    assert outcome.usage is not None
    assert outcome.attempts[-1].cpu_seconds == outcome.usage.cpu_seconds
    assert outcome.reward == sum(a.reward or 0 for a in outcome.attempts)
    assert all(a.reward for a in outcome.attempts)
