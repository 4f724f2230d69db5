"""Freezing a running step while the owner's preferences pause the site.

The runtime's wait loop polls `poll()` with its other checks (every
POLL_SECONDS): when `should_freeze` turns true the step is frozen (Docker:
`container.pause()`, the cgroup freezer; the process runtime: SIGSTOP to the
step's process group), when it turns false it is thawed. The time spent frozen
is added to the step's deadline, so a pause never makes a task time out; a
step frozen longer in all than HIVEMIND_MAX_FROZEN_SECONDS is stopped, so no
pool waits for ever. CPU time is what the kernel measured: a frozen step uses
none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

ShouldFreeze = Callable[[], bool]


class Freezer:
    def __init__(
        self,
        should_freeze: ShouldFreeze | None,
        freeze: Callable[[], None],
        thaw: Callable[[], None],
        max_frozen: float,
        task_id: str,
    ) -> None:
        self._should_freeze = should_freeze
        self._freeze = freeze
        self._thaw = thaw
        self.max_frozen = max_frozen
        self.task_id = task_id
        self._since: float | None = None  # monotonic time the step was frozen, while it is
        self._total = 0.0

    @property
    def frozen(self) -> bool:
        return self._since is not None

    def frozen_seconds(self) -> float:
        """All the time the step spent frozen so far."""
        now = time.monotonic()
        return self._total + (now - self._since if self._since is not None else 0.0)

    def poll(self) -> bool:
        """Freeze or thaw as asked; True once the step was frozen past the limit."""
        if self._should_freeze is None:
            return False
        want = self._wanted()
        if want and self._since is None:
            try:
                self._freeze()
            except Exception:  # noqa: BLE001 - a step that cannot be frozen runs on
                log.warning("could not freeze the task; it runs on", exc_info=True, extra={"task_id": self.task_id})
                return False
            self._since = time.monotonic()
            log.info("task frozen (the site is paused)", extra={"task_id": self.task_id})
        elif not want and self._since is not None:
            self.release()
            log.info("task thawed after %.1f s frozen in all", self._total, extra={"task_id": self.task_id})
        return self.frozen_seconds() > self.max_frozen

    def release(self) -> None:
        """Thaw, whatever is asked (before a stop, a kill or the step's end)."""
        if self._since is None:
            return
        self._total += time.monotonic() - self._since
        self._since = None
        try:
            self._thaw()
        except Exception:  # noqa: BLE001 - gone already: nothing left to thaw
            log.warning("could not thaw the task", exc_info=True, extra={"task_id": self.task_id})

    def _wanted(self) -> bool:
        try:
            return bool(self._should_freeze and self._should_freeze())
        except Exception:  # noqa: BLE001 - Redis briefly gone: keep the state it has
            log.warning("freeze check failed; keeping the task as it is", exc_info=True, extra={"task_id": self.task_id})
            return self._since is not None


def frozen_reason(max_frozen: float) -> str:
    return (
        f"stopped: frozen by the owner's pause for longer than this site's limit of {max_frozen:g} s "
        "(HIVEMIND_MAX_FROZEN_SECONDS)"
    )
