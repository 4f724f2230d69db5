"""decide(): the owner's preferences turned into running/paused, with any clock and load."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from hivemind_celery.core.prefs import Hours, Preferences, decide

NOON = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def at(hour: int, minute: int = 0) -> datetime:
    return NOON.replace(hour=hour, minute=minute)


def test_defaults_run_always() -> None:
    mode = decide(Preferences(), NOON, non_task_cpu_percent=99.0, owner_idle_seconds=0.0)
    assert mode.state == "running" and mode.reason == ""


def test_run_mode_never_pauses() -> None:
    mode = decide(Preferences(run_mode="never"), NOON, 0.0, None)
    assert mode.paused and "paused by the owner" in mode.reason


@pytest.mark.parametrize(
    ("moment", "state"),
    [
        (at(21, 59), "paused"),
        (at(22, 0), "running"),
        (at(23, 30), "running"),
        (at(0, 0), "running"),
        (at(6, 59), "running"),
        (at(7, 0), "paused"),
        (at(12, 0), "paused"),
    ],
)
def test_hours_crossing_midnight(moment: datetime, state: str) -> None:
    mode = decide(Preferences(hours=Hours(start="22:00", end="07:00")), moment, 0.0, None)
    assert mode.state == state
    if state == "paused":
        assert mode.reason == "outside the hours 22:00-07:00"


@pytest.mark.parametrize(
    ("moment", "state"), [(at(8, 59), "paused"), (at(9, 0), "running"), (at(16, 59), "running"), (at(17, 0), "paused")]
)
def test_hours_within_a_day(moment: datetime, state: str) -> None:
    assert decide(Preferences(hours="09:00-17:00"), moment, 0.0, None).state == state


def test_pause_for_ends_by_itself() -> None:
    prefs = Preferences(paused_until=NOON + timedelta(hours=2))
    during = decide(prefs, NOON + timedelta(minutes=30), 0.0, None)
    assert during.paused and during.reason == "paused by the owner until 14:00"
    assert decide(prefs, NOON + timedelta(hours=2), 0.0, None).state == "running"


def test_owner_busy_by_cpu() -> None:
    prefs = Preferences(suspend_above_cpu_percent=50)
    busy = decide(prefs, NOON, 73.4, None)
    assert busy.paused and busy.reason == "the owner is using the machine (CPU 73 % > 50 %)"
    assert decide(prefs, NOON, 50.0, None).state == "running"


def test_when_idle_uses_input_and_cpu() -> None:
    prefs = Preferences(run_mode="when_idle")
    assert decide(prefs, NOON, 0.0, owner_idle_seconds=10).paused
    assert decide(prefs, NOON, 0.0, owner_idle_seconds=600).state == "running"
    assert decide(prefs, NOON, 90.0, owner_idle_seconds=None).paused  # headless: CPU alone says


def test_first_rule_wins_in_the_owners_order() -> None:
    prefs = Preferences(paused_until=NOON + timedelta(hours=1), hours="22:00-07:00", suspend_above_cpu_percent=10)
    assert decide(prefs, NOON, 90.0, None).reason.startswith("paused by the owner until")


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"hours": "25:00-07:00"}, "HH:MM"),
        ({"hours": "22:00"}, "START-END"),
        ({"hours": "07:00-07:00"}, "empty"),
        ({"cpu_share_percent": 0}, "cpu_share_percent"),
        ({"memory_share_percent": 101}, "memory_share_percent"),
        ({"run_mode": "sometimes"}, "run_mode"),
        ({"gpus": ["0", "x y"]}, "GPU index"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_preferences_name_what_is_wrong(fields: dict, named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        Preferences.model_validate(fields)
