"""Usage of a task running in a real `celery worker` subprocess, seen the way a
user of the site sees it:

- the custom signals (`hivemind_celery.observability.signals`) reach a receiver connected
  inside the worker (tests/usage_signal_receiver.py, loaded with
  `celery worker --include`), with their documented payloads;
- `AsyncResult(task_id).info` shows live usage while the task runs;
- a Celery event receiver (what Flower runs) gets a `task-usage` event per sample;
- the return value carries the usage summary and the reward.

One CPU-burning task (about 9 s, samples every second) is run once for the
module; each test checks one view of it.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from hivemind_celery.core.model import TASK_NAME, TaskOutcome, TaskSpec, TaskStatus
from hivemind_celery.core.reward import RewardPolicy, compute_reward
from hivemind_celery.core.settings import Settings
from hivemind_celery.payloads.store import PayloadStore
from hivemind_celery.task.observers import RUNNING_STATE, USAGE_EVENT
from tests.services_kit import make_zip
from tests.usage_signal_receiver import signal_key

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]

BURN_SECONDS = 9
BURNER = (
    f"import time\nend = time.monotonic() + {BURN_SECONDS}\nn = 0\nwhile time.monotonic() < end:\n    n += 1\nprint('loops', n)\n"
)


class EventWatcher:
    """Celery's event receiver and state, as Flower uses them, on a thread."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state = app.events.State()
        self.counts: Counter = Counter()  # (hostname, event type) -> count, like Flower's counter
        self.usage_events: list[dict] = []
        self.ready = threading.Event()
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._run, name="event-watcher", daemon=True)

    def _on_event(self, event: dict) -> None:
        self.state.event(event)
        self.counts[(event.get("hostname"), event["type"])] += 1
        if event["type"] == USAGE_EVENT:
            self.usage_events.append(event)

    def _run(self) -> None:
        with self.app.connection_for_read() as connection:
            self._receiver = self.app.events.Receiver(connection, handlers={"*": self._on_event})
            announce = self._receiver.on_consume_ready

            def on_consume_ready(*args: Any, **kwargs: Any) -> None:
                announce(*args, **kwargs)
                self.ready.set()  # subscribed: events sent from now on reach us

            self._receiver.on_consume_ready = on_consume_ready
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def start(self) -> None:
        self._thread.start()
        assert self.ready.wait(15), "event receiver did not subscribe"

    def stop(self) -> None:
        if self._receiver is not None:
            self._receiver.should_stop = True
        self._thread.join(timeout=10)


@dataclass
class Run:
    task_id: str
    worker: Any
    outcome: TaskOutcome
    raw: dict
    live: list[tuple[str, Any]] = field(default_factory=list)  # (state, info) seen while it ran
    events: EventWatcher | None = None


@pytest.fixture(scope="module")
def run(start_worker, celery_app, redis_client, redis_url) -> Run:
    worker = start_worker(
        "cpu", concurrency=1, extra_args=("--include", "tests.usage_signal_receiver"), HIVEMIND_SAMPLE_INTERVAL="1"
    )
    store = PayloadStore(redis_client, Settings(redis_url=redis_url))
    spec = TaskSpec(
        task_id=f"live-{uuid.uuid4().hex[:10]}",
        payload=store.put(make_zip({"main.py": BURNER})),
        cpus=1.0,
        memory_mb=256,
        timeout=120,
    )
    watcher = EventWatcher(celery_app)
    watcher.start()
    live: list[tuple[str, Any]] = []
    try:
        result = celery_app.send_task(TASK_NAME, args=[spec.model_dump(mode="json")], task_id=spec.task_id, queue="cpu")
        deadline = time.monotonic() + 180
        while not result.ready() and time.monotonic() < deadline:
            probe = celery_app.AsyncResult(spec.task_id)
            live.append((probe.state, probe.info))
            time.sleep(0.25)
        raw = result.get(timeout=30)
        time.sleep(1.5)  # the task-succeeded event follows the result
    finally:
        watcher.stop()
    return Run(spec.task_id, worker, TaskOutcome.model_validate(raw), raw, live, watcher)


def received(redis_client, name: str, task_id: str) -> list[dict]:
    entries = [json.loads(item) for item in redis_client.lrange(signal_key(f"hivemind.{name}"), 0, -1)]
    return [e for e in entries if e["kwargs"].get("task_id") == task_id]


def test_task_burned_cpu_and_returned_usage_and_reward(run: Run) -> None:
    outcome = run.outcome
    assert outcome.status is TaskStatus.SUCCEEDED, (outcome.reason, run.worker.log())
    usage = outcome.usage
    assert usage is not None and usage.source == "cgroup"
    # 9 s of a busy loop under a 1-core quota; the machine is shared, so only a floor.
    assert 1.0 < usage.cpu_seconds <= BURN_SECONDS + 1.5
    assert usage.samples >= 5
    assert usage.memory_peak_bytes > 1024 * 1024  # a Python interpreter ran
    # The return value (what Flower shows) holds the summary and the reward.
    assert run.raw["usage"]["cpu_seconds"] == usage.cpu_seconds
    expected = compute_reward(
        outcome.duration, usage.cpu_percent, usage.memory_percent, usage.gpu_percent, RewardPolicy.from_settings(Settings())
    )
    assert run.raw["reward"] == outcome.reward == expected >= 1


def test_signals_reach_a_receiver_inside_the_worker(run: Run, redis_client) -> None:
    worker_pid = run.worker.proc.pid
    started = received(redis_client, "task_container_started", run.task_id)
    assert len(started) == 1
    container_id = started[0]["kwargs"]["container_id"]
    assert isinstance(container_id, str) and len(container_id) == 64

    samples = received(redis_client, "resource_usage", run.task_id)
    assert len(samples) >= 5, f"{len(samples)} samples for a {BURN_SECONDS} s task at 1 s"
    for entry in [*started, *samples]:
        assert entry["sender"] == TASK_NAME
        # Sent in the pool child (a child of the worker's main process), not in this test process.
        assert entry["ppid"] == worker_pid and entry["pid"] != worker_pid
    payloads = [entry["kwargs"]["sample"] for entry in samples]
    assert {p["task_id"] for p in payloads} == {run.task_id}
    assert {p["source"] for p in payloads} == {"cgroup"}
    cpu = [p["cpu_seconds"] for p in payloads]
    assert cpu == sorted(cpu) and cpu[-1] > 1.0
    assert max(p["cpu_percent"] for p in payloads) > 20.0  # a busy loop, of one reserved core
    assert all(p["memory_bytes"] > 0 and p["pids"] >= 1 for p in payloads)

    rewarded = received(redis_client, "task_rewarded", run.task_id)
    assert len(rewarded) == 1
    reward = rewarded[0]["kwargs"]
    assert reward["reward"] == run.outcome.reward
    assert reward["usage"] == run.raw["usage"]
    assert reward["duration"] == pytest.approx(run.outcome.duration)

    finished = received(redis_client, "task_container_finished", run.task_id)
    assert len(finished) == 1
    assert finished[0]["kwargs"]["outcome"]["status"] == "succeeded"
    assert finished[0]["kwargs"]["outcome"]["reward"] == run.outcome.reward
    assert finished[0]["kwargs"]["outcome"]["usage"] == run.raw["usage"]


def test_async_result_info_shows_live_usage(run: Run) -> None:
    running = [info for state, info in run.live if state == RUNNING_STATE]
    assert len(running) >= 3, f"states seen while it ran: {Counter(s for s, _ in run.live)}"
    usages = [info["usage"] for info in running]
    assert {u["task_id"] for u in usages} == {run.task_id}
    assert max(u["cpu_seconds"] for u in usages) > 0.5
    assert max(u["elapsed_s"] for u in usages) > 2.0
    # Live figures never exceed the final totals.
    assert max(u["cpu_seconds"] for u in usages) <= run.outcome.usage.cpu_seconds + 1e-6


def test_flower_style_event_receiver_counts_usage_events(run: Run) -> None:
    watcher = run.events
    mine = [e for e in watcher.usage_events if e["uuid"] == run.task_id]
    assert len(mine) >= 2, f"event counts: {dict(watcher.counts)}"
    assert all(e["hostname"] == run.worker.hostname for e in mine)
    assert mine[-1]["cpu_seconds"] >= mine[0]["cpu_seconds"] and mine[-1]["cpu_seconds"] > 0.5
    assert watcher.counts[(run.worker.hostname, USAGE_EVENT)] >= len(mine)
    # The standard task events arrived too, and the events State (Flower's model) knows the task.
    assert watcher.counts[(run.worker.hostname, "task-succeeded")] >= 1
    task = watcher.state.tasks.get(run.task_id)
    assert task is not None and task.worker is not None and task.worker.hostname == run.worker.hostname
