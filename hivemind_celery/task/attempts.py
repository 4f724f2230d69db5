"""Every start of a task, kept in Redis for whichever worker ends it.

A task interrupted (its worker stopped, its host died, a long pause released
it) is started again, here or on another worker of the site; the final
outcome lists all its attempts (TaskOutcome.attempts, execution_report.json)
and its reward is their sum. Each attempt is one JSON item of the list
`keys.task_attempt_log`: appended when it begins, kept current by
`AttemptObserver` at every usage sample (so an attempt whose worker died
keeps what was measured up to its last sample), and closed by its own run
(finished, requeued, released). One still "running" when the next begins was
lost with its worker.
"""

from __future__ import annotations

import logging
import socket
from datetime import UTC, datetime
from typing import Any

import redis

from hivemind_celery.core import keys
from hivemind_celery.core.model import Attempt, AttemptEnd, TaskOutcome
from hivemind_celery.core.reward import RewardPolicy, compute_reward
from hivemind_celery.core.units import MiB, as_text
from hivemind_celery.payloads.checkpoint import CheckpointPointer
from hivemind_celery.task.observers import TaskObserver, TaskRun
from hivemind_celery.usage.sampler import UsageSample

log = logging.getLogger(__name__)

LOG_TTL = 7 * 24 * 3600


class AttemptLog:
    def __init__(self, client: redis.Redis, task_id: str) -> None:
        self._redis = client
        self.task_id = task_id
        self.key = keys.task_attempt_log(task_id)
        self.index = -1
        self.current: Attempt | None = None

    def all(self) -> list[Attempt]:
        items = self._redis.lrange(self.key, 0, -1)
        attempts = []
        for raw in items:  # type: ignore[union-attr]
            try:
                attempts.append(Attempt.model_validate_json(as_text(raw)))
            except ValueError:
                log.warning("unreadable attempt record skipped", extra={"task_id": self.task_id})
        return attempts

    def with_earlier(self) -> list[Attempt]:
        """Every attempt of the task, this run's last; a first attempt has none
        earlier to read (the task's lock keeps any other run from adding one)."""
        if self.index == 0 and self.current is not None:
            return [self.current]
        return self.all()

    def begin(self, worker: str, resumed: CheckpointPointer | None) -> Attempt:
        """Close earlier attempts still marked running (lost with their worker) and add this one."""
        earlier = self.all()
        for index, attempt in enumerate(earlier):
            if attempt.ended == "running":
                self._redis.lset(self.key, index, attempt.model_copy(update={"ended": "lost"}).model_dump_json())
        attempt = Attempt(
            number=len(earlier) + 1,
            worker=worker,
            host=socket.gethostname(),
            started_at=datetime.now(UTC),
            resumed_from=resumed.ref if resumed else None,
            resumed_progress=resumed.progress if resumed else None,
        )
        pipe = self._redis.pipeline()
        pipe.rpush(self.key, attempt.model_dump_json())
        pipe.expire(self.key, LOG_TTL)
        self.index = int(pipe.execute()[0]) - 1
        self.current = attempt
        return attempt

    def update(self, **fields: Any) -> None:
        if self.current is None:
            return
        self.current = self.current.model_copy(update=fields)
        try:
            self._redis.lset(self.key, self.index, self.current.model_dump_json())
        except redis.RedisError:
            log.warning("could not update the attempt record", extra={"task_id": self.task_id})

    def note(self, text: str) -> None:
        if self.current is not None:
            self.update(notes=[*self.current.notes, text])

    def end(self, ended: AttemptEnd, outcome: TaskOutcome) -> None:
        """Close this attempt with the measured use of its run."""
        usage = outcome.usage
        self.update(
            ended=ended,
            ended_at=outcome.finished_at or datetime.now(UTC),
            wall_seconds=outcome.duration,
            cpu_seconds=usage.cpu_seconds if usage else 0.0,
            reward=outcome.reward,
        )


def with_attempts(outcome: TaskOutcome, attempts: list[Attempt]) -> TaskOutcome:
    """The final outcome listing every attempt; its reward is theirs added up."""
    if len(attempts) <= 1:
        return outcome.model_copy(update={"attempts": attempts})
    rewards = [a.reward for a in attempts if a.reward is not None]
    total = sum(rewards) if rewards else outcome.reward
    return outcome.model_copy(update={"attempts": attempts, "reward": total})


class AttemptObserver(TaskObserver):
    """Keeps the attempt's record current with each sample: CPU-s, wall time and
    the reward so far, which stand for the attempt if its worker dies."""

    def __init__(self, attempts: AttemptLog, policy: RewardPolicy) -> None:
        self.attempts = attempts
        self.policy = policy
        self._memory_peak = 0

    def on_sample(self, run: TaskRun, sample: UsageSample) -> None:
        self._memory_peak = max(self._memory_peak, sample.memory_peak_bytes)
        wall = max(sample.elapsed_s, 0.0)
        cpus = max(run.spec.cpus, 0.0)
        cpu_percent = sample.cpu_seconds / (wall * cpus) * 100 if wall > 0 and cpus > 0 else 0.0
        memory_percent = self._memory_peak / (run.spec.memory_mb * MiB) * 100 if run.spec.memory_mb else 0.0
        reward = compute_reward(wall, cpu_percent, memory_percent, sample.gpu_percent, self.policy)
        self.attempts.update(cpu_seconds=sample.cpu_seconds, wall_seconds=wall, reward=reward)
