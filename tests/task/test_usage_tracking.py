"""Usage of a running task reaches signals, events, the result backend and
Redis, and the outcome gets measured usage and its reward."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis

from hivemind_celery.core import keys
from hivemind_celery.core.model import TaskOutcome, TaskSpec, TaskStatus
from hivemind_celery.core.reward import RewardPolicy, compute_reward
from hivemind_celery.core.settings import Settings
from hivemind_celery.observability import signals
from hivemind_celery.runtime.base import Started
from hivemind_celery.site.registry import Registry
from hivemind_celery.task.meter import UsageMeter
from hivemind_celery.task.observers import USAGE_EVENT
from hivemind_celery.usage.cgroup import CgroupPaths, CgroupReader

pytestmark = [pytest.mark.redis, pytest.mark.docker]

REDIS_DB = 52  # this module's own database (see test_registry.py)
BUSYBOX_IMAGE = os.environ.get("HIVEMIND_BUSYBOX_IMAGE", "hivemind-busybox:latest")
PAYLOAD = "sha256:" + "0" * 64


@pytest.fixture(scope="module")
def redis_url(redis_base: str) -> str:
    url = f"{redis_base}/{REDIS_DB}"
    redis.Redis.from_url(url).flushdb()
    return url


class Received:
    """Strongly held receivers for the four custom signals."""

    def __init__(self) -> None:
        self.calls: dict[str, list[dict]] = {}
        self.receivers = []
        for signal in signals.ALL_SIGNALS:

            def receiver(sender, _name=signal.name, **kwargs):
                assert sender == "hivemind.run_task"
                kwargs.pop("signal", None)  # Celery adds the signal itself
                self.calls.setdefault(_name, []).append(kwargs)

            signal.connect(receiver, weak=False)
            self.receivers.append((signal, receiver))

    def __getitem__(self, name: str) -> list[dict]:
        return self.calls.get(f"hivemind.{name}", [])

    def disconnect(self) -> None:
        for signal, receiver in self.receivers:
            signal.disconnect(receiver)


def capture_events(app, event_type: str, found: list, ready: threading.Event) -> None:
    """Listen for Celery events of one type until the first arrives (or 20 s)."""
    with app.connection_for_read() as connection:
        receiver = app.events.Receiver(connection, handlers={event_type: found.append})
        announce = receiver.on_consume_ready

        def on_consume_ready(*args, **kwargs):
            announce(*args, **kwargs)
            ready.set()  # subscribed: events sent from now on reach us

        receiver.on_consume_ready = on_consume_ready
        try:
            for _ in receiver.itercapture(timeout=20, wakeup=False):
                if found:
                    return
        except TimeoutError:
            return


def test_tracker_publishes_and_rewards(celery_app, redis_client, docker_client) -> None:
    @celery_app.task(bind=True, name="test.tracked")
    def tracked(self):  # stands in for hivemind.run_task: an app, a backend, a request
        return None

    settings = Settings(redis_url=celery_app.conf.broker_url, sample_interval=0.5, worker_id="track-worker")
    spec = TaskSpec(task_id="track-1", payload=PAYLOAD, cpus=1.0, memory_mb=64)
    received = Received()
    events: list = []
    ready = threading.Event()
    listener = threading.Thread(target=capture_events, args=(celery_app, USAGE_EVENT, events, ready), daemon=True)
    listener.start()
    assert ready.wait(10)
    container = docker_client.containers.run(
        BUSYBOX_IMAGE,
        ["sh", "-c", "timeout 2 yes > /dev/null; sleep 1"],
        detach=True,
        user="1000:1000",
        network_mode="none",
        nano_cpus=1_000_000_000,
        mem_limit="64m",
        labels={"hivemind.test": "tracking"},
    )
    try:
        container.reload()
        tracker = UsageMeter(tracked, spec, redis_client, settings, docker_client)
        tracker.on_start(Started("track-1", container.id, int(container.attrs["State"]["Pid"])))
        # The main step holds its resources in the site registry while it runs (allocated
        # by the first sample, which the sampler's thread publishes just after on_start).
        deadline = time.monotonic() + 5
        while Registry(redis_client).capacity().allocations == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert Registry(redis_client).capacity().allocations == 1
        container.wait(timeout=30)
        # While running: the latest sample in Redis and in the result backend.
        stored = json.loads(redis_client.get(keys.task_usage("track-1")))
        assert stored["task_id"] == "track-1" and stored["source"] == "cgroup"
        assert 0 < redis_client.ttl(keys.task_usage("track-1")) <= 60
        live = celery_app.AsyncResult("track-1")
        assert live.state == "RUNNING"
        assert live.info["usage"]["cpu_seconds"] > 0
        started = datetime.now(UTC) - timedelta(hours=1)
        outcome = TaskOutcome(
            task_id="track-1",
            status=TaskStatus.SUCCEEDED,
            exit_code=0,
            started_at=started,
            finished_at=started + timedelta(hours=1),
        )
        outcome = tracker.complete(outcome)
    finally:
        container.remove(force=True)
        received.disconnect()
    listener.join(timeout=20)
    assert Registry(redis_client).capacity().allocations == 0  # released at the end

    usage = outcome.usage
    assert usage is not None and usage.source == "cgroup"
    assert 0.3 <= usage.cpu_seconds <= 2.5  # 2 s of `yes` under a 1-core quota
    assert outcome.reward == compute_reward(
        3600, usage.cpu_percent, usage.memory_percent, usage.gpu_percent, RewardPolicy.from_settings(settings)
    )
    assert outcome.reward >= 8  # an hour at any utilization: at least 10 x 0.8

    assert received["task_container_started"] == [{"task_id": "track-1", "container_id": container.id}]
    samples = received["resource_usage"]
    assert len(samples) >= 3 and {s["task_id"] for s in samples} == {"track-1"}
    assert samples[-1]["sample"]["cpu_seconds"] >= samples[0]["sample"]["cpu_seconds"]
    assert received["task_rewarded"] == [
        {"task_id": "track-1", "reward": outcome.reward, "usage": usage.model_dump(mode="json"), "duration": 3600.0}
    ]
    finished = received["task_container_finished"]
    assert len(finished) == 1 and finished[0]["outcome"]["reward"] == outcome.reward

    assert events and events[0]["uuid"] == "track-1" and "cpu_percent" in events[0]
    totals = redis_client.hgetall(keys.worker_totals("track-worker"))
    assert totals[b"tasks:succeeded"] == b"1"
    assert int(totals[b"cpt_awarded"]) == outcome.reward
    assert float(totals[b"cpu_seconds"]) == pytest.approx(usage.cpu_seconds)


def test_task_that_never_started_earns_nothing(redis_client) -> None:
    settings = Settings(worker_id="track-worker-2")
    spec = TaskSpec(task_id="never", payload=PAYLOAD)
    received = Received()
    try:
        tracker = UsageMeter(None, spec, redis_client, settings)
        outcome = tracker.complete(TaskOutcome(task_id="never", status=TaskStatus.REJECTED, reason="bad zip"))
    finally:
        received.disconnect()
    assert outcome.usage is None and outcome.reward is None
    assert received["task_rewarded"] == []
    assert received["task_container_finished"][0]["outcome"]["status"] == "rejected"
    assert redis_client.hget(keys.worker_totals("track-worker-2"), "tasks:rejected") == b"1"


def test_container_gone_before_start_is_not_measured(redis_client) -> None:
    # Docker reports Pid 0 once a container has exited: a task of a few milliseconds
    # ended before on_start. No fallback to the stats API (the task would wait for it);
    # the outcome says usage was not measured and the task earns the minimum for its use.
    settings = Settings(worker_id="track-worker-3", sample_interval=0.2)
    spec = TaskSpec(task_id="gone-1", payload=PAYLOAD)
    tracker = UsageMeter(None, spec, redis_client, settings)
    tracker.on_start(Started("gone-1", "f" * 64, 0))
    now = datetime.now(UTC)
    outcome = tracker.complete(
        TaskOutcome(task_id="gone-1", status=TaskStatus.SUCCEEDED, exit_code=0, started_at=now, finished_at=now)
    )
    assert tracker.docker_client is None  # no Docker client was even made
    assert outcome.usage is not None and outcome.usage.source == "none" and outcome.usage.samples == 0
    assert outcome.reward == 1
    assert redis_client.get(keys.task_usage("gone-1")) is None


def test_a_start_announced_after_the_run_ended_starts_nothing(redis_client, tmp_path) -> None:
    # The Docker runtime announces the start from its own thread, beside following
    # the container, and joins it before the step ends; should a start still come after
    # the run stopped its meter (an error path), nothing is sampled or published for a
    # task that has its outcome. The cgroup is a directory of counter files here: only
    # that a read would be possible matters.
    settings = Settings(worker_id="track-worker-4", sample_interval=0.2)
    spec = TaskSpec(task_id="late-1", payload=PAYLOAD)
    tracker = UsageMeter(None, spec, redis_client, settings)
    assert tracker.stop() is None
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "cpu.stat").write_text("usage_usec 1000\nuser_usec 600\nsystem_usec 400\n")
    (cgroup / "memory.current").write_text("4096\n")
    (cgroup / "pids.current").write_text("1\n")
    assert CgroupReader(paths := CgroupPaths(2, cgroup, cgroup, cgroup)).read().cpu_seconds == 0.001
    tracker.on_start(Started("late-1", "f" * 64, 4242, cgroup=paths))
    assert tracker.stop() is None
    time.sleep(0.5)  # past two sample intervals: a sampler would have published by now
    assert redis_client.get(keys.task_usage("late-1")) is None
    assert redis_client.zscore(keys.site_running(), "late-1") is None  # nor listed as running
