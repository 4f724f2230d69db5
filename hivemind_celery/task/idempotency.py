"""Run each task id at most once, even when Redis redelivers its message.

Late acks mean a message can come back after a worker died, or be sent twice
by the bridge. The first run takes a lock (refreshed while it runs, so a dead
holder loses it within `lock_ttl`); a later delivery either returns the stored
outcome or waits for the running one to store it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass

import redis

from hivemind_celery.core import keys
from hivemind_celery.core.model import TaskOutcome
from hivemind_celery.core.units import as_text

OUTCOME_TTL = 7 * 24 * 3600

# The stored outcome; else the lock and this attempt's number; else "busy". One round trip.
_CLAIM = """
local outcome = redis.call('GET', KEYS[1])
if outcome then return {'done', outcome} end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'EX', ARGV[2]) then return {'busy'} end
local attempt = redis.call('INCR', KEYS[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return {'ours', attempt}
"""


@dataclass(frozen=True)
class Claim:
    """What `TaskGuard.claim` found: the outcome of a run that ended, or the
    lock taken with this attempt's number (counted from 1), or neither (another
    run holds the lock)."""

    outcome: TaskOutcome | None = None
    attempt: int = 0


class TaskGuard:
    def __init__(self, client: redis.Redis, task_id: str, lock_ttl: int = 60) -> None:
        self._redis = client
        self.task_id = task_id
        self.lock_ttl = lock_ttl
        self._token = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None

    # -- outcome ---------------------------------------------------------
    def stored_outcome(self) -> TaskOutcome | None:
        raw = self._redis.get(keys.task_outcome(self.task_id))
        return TaskOutcome.model_validate_json(raw) if raw else None

    def store_outcome(self, outcome: TaskOutcome) -> None:
        self._redis.set(keys.task_outcome(self.task_id), outcome.model_dump_json(), ex=OUTCOME_TTL)

    # -- claim -----------------------------------------------------------
    def claim(self) -> Claim:
        """The stored outcome if the task ran; else take the lock and count this
        attempt (a lost worker's attempts add up to the task's limit)."""
        names = (keys.task_outcome(self.task_id), keys.task_lock(self.task_id), keys.task_attempts(self.task_id))
        reply = self._redis.register_script(_CLAIM)(keys=names, args=[self._token, self.lock_ttl, OUTCOME_TTL])
        kind = as_text(reply[0])
        if kind == "done":
            return Claim(outcome=TaskOutcome.model_validate_json(reply[1]))
        if kind == "busy":
            return Claim()
        self._refresher = threading.Thread(target=self._refresh, name=f"lock-{self.task_id}", daemon=True)
        self._refresher.start()
        return Claim(attempt=int(reply[1]))

    # -- attempts --------------------------------------------------------
    def uncount_attempt(self) -> None:
        """Give back an attempt that ended on purpose to resume later (worker stopping)."""
        self._redis.decr(keys.task_attempts(self.task_id))

    # -- lock --------------------------------------------------------------
    def release(self) -> None:
        # The refresher is told to stop, not waited for (it would have to be
        # scheduled first, on the path that returns the outcome): a refresh that
        # runs after the delete finds no lock with our token and does nothing.
        self._stop.set()
        # Delete only our own lock: compare-and-delete in one step.
        self._redis.eval(
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0",
            1,
            keys.task_lock(self.task_id),
            self._token,
        )

    def wait_for_outcome(self, deadline: float, poll: float = 1.0) -> TaskOutcome | None:
        """Wait until the run holding the lock stores its outcome, or the lock
        goes (its holder died): then None, and the caller may run it."""
        while time.monotonic() < deadline:
            outcome = self.stored_outcome()
            if outcome is not None:
                return outcome
            if not self._redis.exists(keys.task_lock(self.task_id)):
                return self.stored_outcome()
            time.sleep(poll)
        return self.stored_outcome()

    def _refresh(self) -> None:
        script = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('expire', KEYS[1], ARGV[2]) end return 0"
        while not self._stop.wait(self.lock_ttl / 3):
            try:
                self._redis.eval(script, 1, keys.task_lock(self.task_id), self._token, self.lock_ttl)
            except redis.RedisError:
                pass  # the next beat retries; a lost lock only allows a duplicate run
