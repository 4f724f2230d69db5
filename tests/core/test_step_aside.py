"""Stepping aside for the machine (core/step_aside.py): battery and heat trip a
pause at once; resuming waits for every cause to be clear (a heat limit's
margin below it) for resume_after_seconds, so a machine hovering at a limit
does not flap. Pure: readings and the clock are the test's."""

from __future__ import annotations

from datetime import datetime

import pytest
from pydantic import ValidationError

from hivemind_celery.core.prefs import Preferences, decide
from hivemind_celery.core.step_aside import Readings, StepAside

NOON = datetime(2026, 12, 1, 12, 0)


def test_a_machine_without_battery_or_sensors_never_steps_aside() -> None:
    prefs = Preferences(max_cpu_temperature_c=80, max_gpu_temperature_c=80)
    for gpu_tasks in (False, True):
        assert StepAside(gpu_tasks).judge(prefs, Readings(), 0.0) is None


def test_on_battery_pauses_at_once_and_resumes_only_after_mains_held_long_enough() -> None:
    prefs = Preferences(resume_after_seconds=30)
    aside = StepAside(gpu_tasks=False)
    assert aside.judge(prefs, Readings(on_battery=False), 0.0) is None
    assert aside.judge(prefs, Readings(on_battery=True), 1.0) == "the machine runs on its battery"
    assert decide(prefs, NOON, 0.0, None, aside.judge(prefs, Readings(on_battery=True), 2.0)).paused
    # plugged back in: still paused until 30 s of mains power
    held = aside.judge(prefs, Readings(on_battery=False), 10.0)
    assert held is not None and "resuming after 30 s clear" in held
    assert aside.judge(prefs, Readings(on_battery=False), 39.0) is not None
    # unplugged again meanwhile: the clear time starts over
    assert aside.judge(prefs, Readings(on_battery=True), 39.5) is not None
    assert aside.judge(prefs, Readings(on_battery=False), 40.0) is not None
    assert aside.judge(prefs, Readings(on_battery=False), 69.0) is not None
    assert aside.judge(prefs, Readings(on_battery=False), 70.0) is None


def test_battery_rule_off_ignores_the_battery() -> None:
    prefs = Preferences(pause_on_battery=False)
    assert StepAside(False).judge(prefs, Readings(on_battery=True), 0.0) is None


def test_heat_has_a_margin_below_the_limit_before_resuming() -> None:
    prefs = Preferences(max_cpu_temperature_c=80, temperature_margin_c=5, resume_after_seconds=0)
    aside = StepAside(gpu_tasks=False)
    assert aside.judge(prefs, Readings(cpu_temperature_c=80.0), 0.0) is None  # at the limit: not above it
    tripped = aside.judge(prefs, Readings(cpu_temperature_c=81.0), 1.0)
    assert tripped == "the CPU is too hot (81 °C > 80 °C)"
    # hovering just under the limit: no flapping back to running
    for at, temp in ((2.0, 79.0), (3.0, 78.0), (4.0, 76.0)):
        reason = aside.judge(prefs, Readings(cpu_temperature_c=temp), at)
        assert reason is not None and reason.endswith("waiting for it to clear")
    assert aside.judge(prefs, Readings(cpu_temperature_c=75.0), 5.0) is None  # limit - margin


def test_gpu_tasks_watch_the_gpus_and_cpu_tasks_the_cpu() -> None:
    prefs = Preferences(max_cpu_temperature_c=70, max_gpu_temperature_c=85, resume_after_seconds=0)
    hot_gpu = Readings(cpu_temperature_c=50.0, gpu_temperature_c=90.0)
    hot_cpu = Readings(cpu_temperature_c=75.0, gpu_temperature_c=60.0)
    assert StepAside(gpu_tasks=True).judge(prefs, hot_gpu, 0.0) == "the GPU is too hot (90 °C > 85 °C)"
    assert StepAside(gpu_tasks=False).judge(prefs, hot_gpu, 0.0) is None
    assert StepAside(gpu_tasks=True).judge(prefs, hot_cpu, 0.0) is None
    assert StepAside(gpu_tasks=False).judge(prefs, hot_cpu, 0.0) == "the CPU is too hot (75 °C > 70 °C)"


def test_decide_puts_the_owner_and_the_hours_before_the_machine() -> None:
    reason = "the machine runs on its battery"
    assert decide(Preferences(run_mode="never"), NOON, 0.0, None, reason).reason.startswith("paused by the owner")
    assert decide(Preferences(hours="13:00-14:00"), NOON, 0.0, None, reason).reason.startswith("outside the hours")
    assert decide(Preferences(suspend_above_cpu_percent=10), NOON, 90.0, None, reason).reason == reason
    assert not decide(Preferences(), NOON, 0.0, None, None).paused


def test_limits_are_checked() -> None:
    for bad in (
        {"max_cpu_temperature_c": 0},
        {"max_gpu_temperature_c": 151},
        {"temperature_margin_c": -1},
        {"resume_after_seconds": 3601},
        {"pause_on_battery": "perhaps"},
    ):
        with pytest.raises(ValidationError):
            Preferences.model_validate(bad)
