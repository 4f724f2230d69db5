"""Wiring usage measurement into a running Celery task.

`TaskUsageTracker` is what `hivemind.run_task` uses::

    tracker = TaskUsageTracker(task, spec, redis_client, settings)
    result = runtime.run(job, ..., on_start=tracker.on_start)
    outcome = tracker.complete(outcome_from_result(...))   # usage + reward filled in

While the task runs, every sample goes out four ways:
- the `resource_usage` signal (receivers in the pool child);
- a `task-usage` Celery event (Flower counts custom events; fire-and-forget);
- the result backend as state RUNNING with meta {"usage": sample}, so
  `AsyncResult(task_id).info["usage"]` shows live usage;
- Redis `keys.task_usage(task_id)` with a TTL, which the bridge relays to the
  Node Pool as TaskUsage.
At the end `complete` stops sampling, computes the reward from the measured
totals, sends `task_rewarded` and `task_container_finished`, and adds to this
worker's totals in Redis (`keys.worker_totals`), which the main process's
Prometheus collector reads.

It also holds the task's resources in the site registry: allocated with the
first sample, on the sampler's thread just after the main step starts (a
no-op after the bridge's allocation at intake), the
deadline pushed out with every sample, released at the end. If the worker
dies, the allocation lapses ALLOCATION_TTL seconds after the last sample.

The sampler publishes from its own thread, where Celery's `task.request` is
empty (it is thread-local), so the request is captured up front.
"""

from __future__ import annotations

import json
import logging
import threading
from functools import partial
from typing import Any

import redis

from hivemind_celery.core import keys

from hivemind_celery.observability import signals
from hivemind_celery.core.model import TaskOutcome, TaskSpec, TaskStatus, UsageSummary
from hivemind_celery.site.registry import Registry
from hivemind_celery.core.reward import RewardPolicy, compute_reward
from hivemind_celery.runtime.base import Started
from hivemind_celery.usage.sampler import UsageSample, UsageSampler, UsageSource, source_for
from hivemind_celery.core.settings import Settings
from hivemind_celery.usage.totals import step_totals, whole_run

log = logging.getLogger(__name__)

MiB = 1024 * 1024
TASK_NAME = "hivemind.run_task"
USAGE_EVENT = "task-usage"
RUNNING_STATE = "RUNNING"
# The latest sample outlives the task a little, so a relay that polls every
# few seconds still sees the last one.
USAGE_TTL_FLOOR = 60
ALLOCATION_TTL = 120.0


def record_totals(client: redis.Redis, worker_id: str, status: str, cpu_seconds: float, reward: int) -> None:
    """Add one finished task to this worker's running totals (for metrics)."""
    key = keys.worker_totals(worker_id)
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(key, f"tasks:{status}", 1)
    pipe.hincrbyfloat(key, "cpu_seconds", float(cpu_seconds))
    pipe.hincrby(key, "cpt_awarded", int(reward))
    pipe.execute()


class TaskUsageTracker:
    """Measures one task from its container's start to the end of its run."""

    def __init__(self, task: Any, spec: TaskSpec, client: redis.Redis, settings: Settings,
                 docker_client: Any = None) -> None:
        self.task = task
        self.spec = spec
        self.client = client
        self.settings = settings
        self.docker_client = docker_client
        # Captured here, on the task's own thread (see the module docstring).
        self._request = getattr(task, "request", None) if task is not None else None
        self._hostname = getattr(self._request, "hostname", None)
        self._sampler: UsageSampler | None = None
        self._lock = threading.Lock()
        self._usage_ttl = max(USAGE_TTL_FLOOR, int(settings.sample_interval * 10))
        self._registry = Registry(client)
        self._allocation_ttl = max(ALLOCATION_TTL, settings.sample_interval * 10)

    # --- during the run ------------------------------------------------------
    def on_start(self, started: Started) -> None:
        """Runtime callback: the main step runs; start sampling it.

        This runs on the task's start path, so it does only what cannot wait:
        find the task's cgroup (local files) and take the first read while the
        container surely exists. The Docker stats fallback (a Docker client and
        seconds per read), the registry allocation and the first publication
        happen on the sampler's thread.
        """
        self._send(signals.task_container_started, task_id=self.spec.task_id,
                   container_id=started.container_id)
        source = None
        try:
            source = source_for(started.pid, started.container_id, with_gpu=self.spec.wants_gpu,
                                cgroup=started.cgroup)
        except Exception:  # noqa: BLE001 - the fallback on the sampler's thread tries again
            log.exception("locating the task's cgroup failed", extra={"task_id": self.spec.task_id})
        fallback = None
        if source is None and started.container_id is not None and started.pid <= 0:
            # Docker reported no PID: the container ended before it could be looked at
            # (a task of a few milliseconds). Nothing is left to measure, and asking the
            # stats API would only make the task wait for it.
            log.info("task ended before it could be measured", extra={"task_id": self.spec.task_id})
        elif source is None:
            fallback = partial(self._fallback_source, started)
        sampler = UsageSampler(
            source, self.spec.task_id, cpus_reserved=self.spec.cpus,
            memory_limit_bytes=self.spec.memory_mb * MiB,
            interval=self.settings.sample_interval, on_sample=self.publish,
            open_source=fallback,
        )
        with self._lock:
            self._sampler = sampler
        sampler.start()

    def _fallback_source(self, started: Started) -> UsageSource | None:
        """On the sampler's thread: Docker's stats API where no cgroup is visible."""
        source = source_for(started.pid, started.container_id, self._docker(started),
                            with_gpu=self.spec.wants_gpu)
        if source is None:
            log.warning("task cannot be measured; usage will be empty", extra={"task_id": self.spec.task_id})
            self._hold()  # no samples will hold it: allocate once, it lapses after ALLOCATION_TTL
        return source

    def _hold(self) -> None:
        """Allocate (or keep alive) this task's resources in the site registry."""
        spec = self.spec
        try:
            self._registry.allocate(spec.task_id, spec.cpus, spec.memory_mb, spec.gpus, spec.gpu_memory_mb,
                                    ttl=self._allocation_ttl)
        except redis.RedisError as exc:
            log.warning("could not hold the task's allocation: %s", exc, extra={"task_id": spec.task_id})

    def _docker(self, started: Started) -> Any:
        if started.container_id is None or self.docker_client is not None:
            return self.docker_client
        try:
            import docker

            self.docker_client = docker.from_env(timeout=int(self.settings.docker_timeout))
        except Exception:  # noqa: BLE001 - only the stats fallback needs it
            log.warning("no Docker client for the stats fallback", extra={"task_id": self.spec.task_id})
        return self.docker_client

    def publish(self, sample: UsageSample) -> None:
        """Send one sample to the signal, the event stream, the result backend and Redis."""
        data = sample.as_dict()
        task_id = self.spec.task_id
        self._send(signals.resource_usage, task_id=task_id, sample=data)
        self._hold()
        try:
            self.client.set(keys.task_usage(task_id), json.dumps(data), ex=self._usage_ttl)
        except redis.RedisError:
            log.warning("could not store the usage sample", extra={"task_id": task_id})
        if self.task is None:
            return
        try:
            with self.task.app.events.default_dispatcher(hostname=self._hostname) as dispatcher:
                dispatcher.send(USAGE_EVENT, uuid=task_id, **data)
            self.task.backend.store_result(task_id, {"usage": data}, RUNNING_STATE, request=self._request)
        except Exception:  # noqa: BLE001 - monitoring is best effort; the task goes on
            log.warning("could not publish the usage sample", exc_info=True, extra={"task_id": task_id})

    def _send(self, signal: Any, **kwargs: Any) -> None:
        # send() logs and swallows receivers' errors; a receiver cannot break a task.
        signal.send(sender=TASK_NAME, **kwargs)

    # --- at the end ----------------------------------------------------------
    def stop(self) -> UsageSummary | None:
        """Stop sampling; the totals, or None if the main step never started."""
        with self._lock:
            sampler = self._sampler
        return sampler.stop() if sampler is not None else None

    def complete(self, outcome: TaskOutcome, policy: RewardPolicy | None = None) -> TaskOutcome:
        """The outcome with usage and reward filled in; signals sent, totals kept.

        A task none of whose steps started (rejected, refused) earns nothing
        (reward None); one that ran earns by its measured use whatever its exit
        status, since the contributor's machine did the work. `usage` covers
        the whole run over the outcome's duration (see usage_totals); the
        runtime's exact per-step totals (outcome.setup_usage/main_usage, from
        `outcome_from_result`) win over the sampler's readings.
        """
        spec, limit = self.spec, self.spec.memory_mb * MiB
        main = step_totals(outcome.main_usage, self.stop(), spec.cpus, limit)
        usage = whole_run(outcome.setup_usage, main, outcome.duration, spec.cpus, limit)
        reward: int | None = None
        if usage is not None and outcome.status is not TaskStatus.REJECTED:
            policy = policy or RewardPolicy.from_settings(self.settings)
            reward = compute_reward(outcome.duration, usage.cpu_percent, usage.memory_percent,
                                    usage.gpu_percent, policy)
        outcome = outcome.model_copy(update={"usage": usage, "main_usage": main, "reward": reward})
        task_id = self.spec.task_id
        if reward is not None and usage is not None:
            self._send(signals.task_rewarded, task_id=task_id, reward=reward,
                       usage=usage.model_dump(mode="json"), duration=outcome.duration)
        self._send(signals.task_container_finished, task_id=task_id, outcome=outcome.model_dump(mode="json"))
        try:
            self._registry.release(task_id)
            record_totals(self.client, self.settings.worker_id, outcome.status.value,
                          usage.cpu_seconds if usage else 0.0, reward or 0)
        except redis.RedisError:
            log.warning("could not record worker totals", extra={"task_id": task_id})
        log.info("task usage: %.2f CPU s, peak %d MiB, reward %s CPT",
                 usage.cpu_seconds if usage else 0.0,
                 (usage.memory_peak_bytes if usage else 0) // MiB, reward,
                 extra={"task_id": task_id})
        return outcome
