"""Stepping aside for the machine: pause while it runs on its battery, or while
the CPU (for CPU tasks) or a GPU (for GPU tasks) is hotter than the owner's
limit. Pure: the caller passes the sensor readings and a monotonic clock.

Resuming has hysteresis, so a machine hovering at a limit does not flap: once
tripped, the pause holds until every condition is clear (on mains power, each
temperature at least `temperature_margin_c` below its limit) and has stayed
clear for `resume_after_seconds`. A reading that is missing (no battery, no
sensor) never pauses: a desktop is never "on battery".
"""

from __future__ import annotations

from dataclasses import dataclass

from hivemind_celery.core.prefs import Preferences


@dataclass(frozen=True)
class Readings:
    on_battery: bool = False
    cpu_temperature_c: float | None = None  # the hottest CPU sensor
    gpu_temperature_c: float | None = None  # the hottest GPU this worker lends


class StepAside:
    """One worker's hysteresis: `judge` says why to stay paused, or None."""

    def __init__(self, gpu_tasks: bool) -> None:
        self.gpu_tasks = gpu_tasks  # a GPU worker watches its GPUs' heat, a CPU worker the CPU's
        self._held: str | None = None  # why we stepped aside, while we do
        self._clear_since: float | None = None

    def _reading(self, readings: Readings) -> float | None:
        return readings.gpu_temperature_c if self.gpu_tasks else readings.cpu_temperature_c

    def _limit(self, prefs: Preferences) -> float | None:
        return prefs.max_gpu_temperature_c if self.gpu_tasks else prefs.max_cpu_temperature_c

    def _tripped(self, prefs: Preferences, readings: Readings) -> str | None:
        if prefs.pause_on_battery and readings.on_battery:
            return "the machine runs on its battery"
        limit, reading = self._limit(prefs), self._reading(readings)
        if limit is not None and reading is not None and reading > limit:
            return f"the {'GPU' if self.gpu_tasks else 'CPU'} is too hot ({reading:.0f} °C > {limit:g} °C)"
        return None

    def _clear(self, prefs: Preferences, readings: Readings) -> bool:
        if prefs.pause_on_battery and readings.on_battery:
            return False
        limit, reading = self._limit(prefs), self._reading(readings)
        return limit is None or reading is None or reading <= limit - prefs.temperature_margin_c

    def judge(self, prefs: Preferences, readings: Readings, now: float) -> str | None:
        tripped = self._tripped(prefs, readings)
        if tripped is not None:
            self._held, self._clear_since = tripped, None
            return tripped
        if self._held is None:
            return None
        if not self._clear(prefs, readings):
            self._clear_since = None  # cooling, not cool enough yet
            return f"{self._held}; waiting for it to clear"
        if self._clear_since is None:
            self._clear_since = now
        if now - self._clear_since >= prefs.resume_after_seconds:
            self._held, self._clear_since = None, None
            return None
        return f"{self._held}; resuming after {prefs.resume_after_seconds:g} s clear"
