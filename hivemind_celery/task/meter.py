"""Measuring one task run, and telling the observers about it.

`UsageMeter` is what the task run uses::

    meter = UsageMeter(task, spec, redis_client, settings)
    result = runtime.run(job, ..., on_start=meter.on_start)
    outcome = meter.complete(outcome_from_result(...))   # usage + reward filled in

It samples the main step from its start (usage/sampler.py), computes the
reward from the measured totals at the end, and calls the observers
(observers.py: signals, events, live state, the usage key, the allocation,
worker totals) at start, at every sample and at the finish.

The sampler publishes from its own thread, where Celery's `task.request` is
empty (it is thread-local), so the request is captured up front.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import redis

from hivemind_celery.core.model import TaskOutcome, TaskSpec, TaskStatus, UsageSummary
from hivemind_celery.core.reward import RewardPolicy, compute_reward
from hivemind_celery.core.settings import Settings
from hivemind_celery.core.units import MiB
from hivemind_celery.runtime.base import Started
from hivemind_celery.runtime.docker_stats import source_for
from hivemind_celery.task.observers import (
    TaskObserver,
    TaskRun,
    default_observers,
    notify,
)
from hivemind_celery.usage.sampler import UsageSample, UsageSampler, UsageSource
from hivemind_celery.usage.totals import step_totals, whole_run

log = logging.getLogger(__name__)


class UsageMeter:
    """Measures one task from its container's start to the end of its run."""

    def __init__(
        self,
        task: Any,
        spec: TaskSpec,
        client: redis.Redis,
        settings: Settings,
        docker_client: Any = None,
        observers: list[TaskObserver] | None = None,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.docker_client = docker_client
        self.observers = default_observers() if observers is None else observers
        # Captured here, on the task's own thread (see the module docstring).
        request = getattr(task, "request", None) if task is not None else None
        self.run = TaskRun(spec, client, settings, task, request, getattr(request, "hostname", None))
        self._sampler: UsageSampler | None = None
        self._stopped = False  # stop() was called: a late on_start starts nothing
        self._lock = threading.Lock()

    # --- during the run ------------------------------------------------------
    def on_start(self, started: Started) -> None:
        """Runtime callback: the main step runs; start sampling it.

        This runs on the task's start path, so it does only what cannot wait:
        find the task's cgroup (local files) and take the first read while the
        container surely exists. The Docker stats fallback (a Docker client and
        seconds per read), the registry allocation and the first publication
        happen on the sampler's thread.
        """
        with self._lock:
            if self._stopped:  # the run already ended (a runtime announcing from its own thread)
                return
        notify(self.observers, "on_start", self.run, started)
        source = None
        try:
            source = source_for(started.pid, started.container_id, with_gpu=self.spec.wants_gpu, cgroup=started.cgroup)
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
            source,
            self.spec.task_id,
            cpus_reserved=self.spec.cpus,
            memory_limit_bytes=self.spec.memory_mb * MiB,
            interval=self.settings.sample_interval,
            on_sample=self.publish,
            open_source=fallback,
        )
        with self._lock:
            if self._stopped:
                return
            self._sampler = sampler
        sampler.start()

    def _fallback_source(self, started: Started) -> UsageSource | None:
        """On the sampler's thread: Docker's stats API where no cgroup is visible."""
        source = source_for(started.pid, started.container_id, self._docker(started), with_gpu=self.spec.wants_gpu)
        if source is None:
            log.warning("task cannot be measured; usage will be empty", extra={"task_id": self.spec.task_id})
            notify(self.observers, "on_unmeasured", self.run)
        return source

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
        """Hand one sample to every observer."""
        notify(self.observers, "on_sample", self.run, sample)

    # --- at the end ----------------------------------------------------------
    def stop(self) -> UsageSummary | None:
        """Stop sampling; the totals, or None if the main step never started."""
        with self._lock:
            self._stopped = True
            sampler = self._sampler
        return sampler.stop() if sampler is not None else None

    def complete(
        self, outcome: TaskOutcome, policy: RewardPolicy | None = None, then: Callable[[TaskOutcome], TaskOutcome] | None = None
    ) -> TaskOutcome:
        """The outcome with usage and reward filled in; the observers told.

        A task none of whose steps started (rejected, refused) earns nothing
        (reward None); one that ran earns by its measured use whatever its exit
        status, since the contributor's machine did the work. `usage` covers
        the whole run over the outcome's duration (see usage/totals.py); the
        runtime's exact per-step totals (outcome.setup_usage/main_usage, from
        `outcome_from_result`) win over the sampler's readings.
        """
        outcome = self.measure(outcome, policy)
        if then is not None:  # e.g. the attempts added (task/attempts.py), before anyone is told
            outcome = then(outcome)
        notify(self.observers, "on_finish", self.run, outcome)
        usage, reward = outcome.usage, outcome.reward
        log.info(
            "task usage: %.2f CPU s, peak %d MiB, reward %s CPT",
            usage.cpu_seconds if usage else 0.0,
            (usage.memory_peak_bytes if usage else 0) // MiB,
            reward,
            extra={"task_id": self.spec.task_id},
        )
        return outcome

    def measure(self, outcome: TaskOutcome, policy: RewardPolicy | None = None) -> TaskOutcome:
        """The outcome with usage and reward filled in; nobody told (see complete)."""
        spec, limit = self.spec, self.spec.memory_mb * MiB
        main = step_totals(outcome.main_usage, self.stop(), spec.cpus, limit)
        usage = whole_run(outcome.setup_usage, main, outcome.duration, spec.cpus, limit)
        reward: int | None = None
        if usage is not None and outcome.status is not TaskStatus.REJECTED:
            policy = policy or RewardPolicy.from_settings(self.settings)
            reward = compute_reward(outcome.duration, usage.cpu_percent, usage.memory_percent, usage.gpu_percent, policy)
        return outcome.model_copy(update={"usage": usage, "main_usage": main, "reward": reward})

    def requeued(self) -> None:
        """The run ends without an outcome (its task goes back to the queue): observers let go."""
        notify(self.observers, "on_requeue", self.run)
