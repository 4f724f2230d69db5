"""What happens around a task run, each its own small observer.

The run's `UsageMeter` (meter.py) measures the task and calls every observer
in `default_observers()` at four points:

- `on_start(run, started)`: the main step's container or process is up (on
  the task's start path: only what cannot wait);
- `on_sample(run, sample)`: a usage sample, on the sampler's thread;
- `on_unmeasured(run)`: the task runs but nothing can measure it, so no
  sample will come;
- `on_finish(run, outcome)`: the outcome, with usage and reward filled in.

The observers, in the order they are called:
- `SignalObserver`: the custom Celery signals (observability/signals.py);
- `AllocationObserver`: holds the task's resources in the site registry:
  allocated with the first sample (a no-op after the bridge's allocation at
  intake), the deadline pushed out with every sample, released at the end; a
  dead worker's allocation lapses ALLOCATION_TTL seconds after its last sample;
- `UsageKeyObserver`: the latest sample in Redis `keys.task_usage(task_id)`
  with a TTL, which the bridge relays to the Node Pool as TaskUsage;
- `UsageEventObserver`: a `task-usage` Celery event (Flower counts custom
  events; fire-and-forget);
- `LiveStateObserver`: the result backend as state RUNNING with meta
  {"usage": sample}, so `AsyncResult(task_id).info["usage"]` shows live usage;
- `TotalsObserver`: adds the finished task to this worker's totals in Redis
  (`keys.worker_totals`), which the main process's Prometheus collector reads;
- `ConsoleObserver`: what the contributor's console shows: the task in the
  site's running list and each sample in the task's bounded time series
  (observability/series.py, site/activity.py); every stored outcome, this
  run's or not, moves it to the history (run.note_ended).

An observer's failure is logged and never breaks the task (`notify`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import redis

from hivemind_celery.core import keys
from hivemind_celery.core.model import TASK_NAME, TaskOutcome, TaskSpec
from hivemind_celery.core.settings import Settings
from hivemind_celery.observability import signals
from hivemind_celery.observability.series import SeriesStore
from hivemind_celery.runtime.base import Started
from hivemind_celery.site.activity import Activity
from hivemind_celery.site.registry import Registry
from hivemind_celery.usage.sampler import UsageSample

log = logging.getLogger(__name__)

USAGE_EVENT = "task-usage"
RUNNING_STATE = "RUNNING"
# The latest sample outlives the task a little, so a relay that polls every
# few seconds still sees the last one.
USAGE_TTL_FLOOR = 60
ALLOCATION_TTL = 120.0


@dataclass(frozen=True)
class TaskRun:
    """What an observer knows of the run. `task` is the Celery task (None when
    a runtime is driven directly); its request is captured on the task's own
    thread, since the sampler's thread sees an empty (thread-local) one."""

    spec: TaskSpec
    client: redis.Redis
    settings: Settings
    task: Any = None
    request: Any = None
    hostname: str | None = None

    @property
    def task_id(self) -> str:
        return self.spec.task_id


class TaskObserver:
    """Does nothing at every point; an observer overrides the ones it needs."""

    def on_start(self, run: TaskRun, started: Started) -> None:
        return None

    def on_sample(self, run: TaskRun, sample: UsageSample) -> None:
        return None

    def on_unmeasured(self, run: TaskRun) -> None:
        return None

    def on_finish(self, run: TaskRun, outcome: TaskOutcome) -> None:
        return None

    def on_requeue(self, run: TaskRun) -> None:
        """The run stopped to resume later (its worker stops): no outcome yet."""
        return None


def notify(observers: list[TaskObserver], point: str, run: TaskRun, *args: Any) -> None:
    """Call `point` on every observer; one that raises is logged and skipped."""
    for observer in observers:
        try:
            getattr(observer, point)(run, *args)
        except Exception:  # noqa: BLE001 - an observer cannot break a task
            log.exception("%s.%s failed", type(observer).__name__, point, extra={"task_id": run.task_id})


def send(signal: Any, **kwargs: Any) -> None:
    # send() logs and swallows receivers' errors; a receiver cannot break a task.
    signal.send(sender=TASK_NAME, **kwargs)


class SignalObserver(TaskObserver):
    def on_start(self, run: TaskRun, started: Started) -> None:
        send(signals.task_container_started, task_id=run.task_id, container_id=started.container_id)

    def on_sample(self, run: TaskRun, sample: UsageSample) -> None:
        send(signals.resource_usage, task_id=run.task_id, sample=sample.as_dict())

    def on_finish(self, run: TaskRun, outcome: TaskOutcome) -> None:
        if outcome.reward is not None and outcome.usage is not None:
            send(
                signals.task_rewarded,
                task_id=run.task_id,
                reward=outcome.reward,
                usage=outcome.usage.model_dump(mode="json"),
                duration=outcome.duration,
            )
        send(signals.task_container_finished, task_id=run.task_id, outcome=outcome.model_dump(mode="json"))


class AllocationObserver(TaskObserver):
    def __init__(self) -> None:
        self._registry: Registry | None = None  # one per run (default_observers makes a new list per run)

    def registry(self, run: TaskRun) -> Registry:
        if self._registry is None:
            self._registry = Registry(run.client)
        return self._registry

    def _hold(self, run: TaskRun) -> None:
        spec = run.spec
        ttl = max(ALLOCATION_TTL, run.settings.sample_interval * 10)
        try:
            self.registry(run).allocate(spec.task_id, spec.cpus, spec.memory_mb, spec.gpus, spec.gpu_memory_mb, ttl=ttl)
        except redis.RedisError as exc:
            log.warning("could not hold the task's allocation: %s", exc, extra={"task_id": spec.task_id})

    def on_sample(self, run: TaskRun, sample: UsageSample) -> None:
        self._hold(run)

    def on_unmeasured(self, run: TaskRun) -> None:
        self._hold(run)  # no samples will hold it: allocate once, it lapses after ALLOCATION_TTL

    def on_requeue(self, run: TaskRun) -> None:
        self.release(run)

    def on_finish(self, run: TaskRun, outcome: TaskOutcome) -> None:
        self.release(run)

    def release(self, run: TaskRun) -> None:
        try:
            self.registry(run).release(run.task_id)
        except redis.RedisError:
            log.warning("could not release the task's allocation", extra={"task_id": run.task_id})


class UsageKeyObserver(TaskObserver):
    def on_sample(self, run: TaskRun, sample: UsageSample) -> None:
        ttl = max(USAGE_TTL_FLOOR, int(run.settings.sample_interval * 10))
        try:
            run.client.set(keys.task_usage(run.task_id), json.dumps(sample.as_dict()), ex=ttl)
        except redis.RedisError:
            log.warning("could not store the usage sample", extra={"task_id": run.task_id})


class UsageEventObserver(TaskObserver):
    def on_sample(self, run: TaskRun, sample: UsageSample) -> None:
        if run.task is None:
            return
        try:
            with run.task.app.events.default_dispatcher(hostname=run.hostname) as dispatcher:
                dispatcher.send(USAGE_EVENT, uuid=run.task_id, **sample.as_dict())
        except Exception:  # noqa: BLE001 - monitoring is best effort; the task goes on
            log.warning("could not send the usage event", exc_info=True, extra={"task_id": run.task_id})


class LiveStateObserver(TaskObserver):
    def on_sample(self, run: TaskRun, sample: UsageSample) -> None:
        if run.task is None:
            return
        try:
            run.task.backend.store_result(run.task_id, {"usage": sample.as_dict()}, RUNNING_STATE, request=run.request)
        except Exception:  # noqa: BLE001 - monitoring is best effort; the task goes on
            log.warning("could not publish the live usage", exc_info=True, extra={"task_id": run.task_id})


def record_totals(client: redis.Redis, worker_id: str, status: str, cpu_seconds: float, reward: int) -> None:
    """Add one finished task to this worker's running totals (for metrics)."""
    key = keys.worker_totals(worker_id)
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(key, f"tasks:{status}", 1)
    pipe.hincrbyfloat(key, "cpu_seconds", float(cpu_seconds))
    pipe.hincrby(key, "cpt_awarded", int(reward))
    pipe.execute()


class TotalsObserver(TaskObserver):
    def on_finish(self, run: TaskRun, outcome: TaskOutcome) -> None:
        usage = outcome.usage
        try:
            record_totals(
                run.client, run.settings.worker_id, outcome.status.value, usage.cpu_seconds if usage else 0.0, outcome.reward or 0
            )
        except redis.RedisError:
            log.warning("could not record worker totals", extra={"task_id": run.task_id})


# What a console chart plots of each sample (the rest stays in the usage key).
SERIES_FIELDS = ("cpu_percent", "memory_bytes", "memory_percent", "gpu_percent", "gpu_memory_bytes", "cpu_seconds")


class ConsoleObserver(TaskObserver):
    def on_start(self, run: TaskRun, started: Started) -> None:
        spec = run.spec
        try:
            Activity(run.client).started(
                run.task_id,
                {
                    "worker": run.settings.worker_id,
                    "cpus": spec.cpus,
                    "memory_mb": spec.memory_mb,
                    "gpus": spec.gpus,
                    "image": spec.image or run.settings.task_image,
                    "owner": spec.owner or "",
                    "timeout": spec.timeout or run.settings.default_timeout,
                    "container_id": started.container_id or "",
                },
            )
        except redis.RedisError:
            log.warning("could not list the task as running", extra={"task_id": run.task_id})

    def on_sample(self, run: TaskRun, sample: UsageSample) -> None:
        point = {name: getattr(sample, name) for name in SERIES_FIELDS}
        try:
            SeriesStore(run.client).add_task_sample(run.task_id, point)
        except redis.RedisError:
            log.warning("could not add the sample to the task's series", extra={"task_id": run.task_id})


def default_observers() -> list[TaskObserver]:
    """A fresh list for each run (observers may keep what they made for it)."""
    return [
        SignalObserver(),
        AllocationObserver(),
        UsageKeyObserver(),
        UsageEventObserver(),
        LiveStateObserver(),
        TotalsObserver(),
        ConsoleObserver(),
    ]
