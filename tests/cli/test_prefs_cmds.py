"""`hivemind prefs show|set`, `hivemind pause [--for]`, `hivemind resume` (typer's
CliRunner, in-process) against a real Redis."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from hivemind.cli import app
from hivemind.cli.prefs_cmds import parse_assignments, parse_duration
from hivemind_celery.core.settings import Settings, get_settings
from hivemind_celery.site.prefs import PrefsStore

pytestmark = pytest.mark.redis

runner = CliRunner()


@pytest.fixture
def store(redis_url, redis_client, monkeypatch) -> PrefsStore:
    monkeypatch.setenv("REDIS_URL", redis_url)
    get_settings.cache_clear()
    redis_client.delete("hm:site:prefs")
    yield PrefsStore(redis_client, Settings(redis_url=redis_url))
    get_settings.cache_clear()


def test_set_show_pause_resume(store) -> None:
    done = runner.invoke(app, ["prefs", "set", "hours=22:00-07:00", "cpu_share_percent=50", "gpus=0,GPU-1a2b"])
    assert done.exit_code == 0, done.output
    prefs = store.load()
    assert str(prefs.hours) == "22:00-07:00" and prefs.cpu_share_percent == 50 and prefs.gpus == ["0", "GPU-1a2b"]
    shown = runner.invoke(app, ["prefs", "show", "--json"])
    assert json.loads(shown.output)["preferences"]["hours"] == {"start": "22:00", "end": "07:00"}
    assert runner.invoke(app, ["prefs", "set", "hours="]).exit_code == 0
    assert store.load().hours is None
    # a pause longer than 30 minutes releases the tasks' memory; "off" keeps them frozen again
    assert runner.invoke(app, ["prefs", "set", "release_memory_after_minutes=30"]).exit_code == 0
    assert store.load().release_memory_after_minutes == 30
    assert runner.invoke(app, ["prefs", "set", "release_memory_after_minutes=off"]).exit_code == 0
    assert store.load().release_memory_after_minutes is None

    paused = runner.invoke(app, ["pause", "--for", "2h"])
    assert paused.exit_code == 0 and "paused until" in paused.output
    assert store.load().paused_until is not None
    assert runner.invoke(app, ["resume"]).exit_code == 0
    assert store.load().paused_until is None
    assert runner.invoke(app, ["pause"]).exit_code == 0 and store.load().run_mode == "never"
    assert runner.invoke(app, ["resume"]).exit_code == 0 and store.load().run_mode == "always"


def test_stepping_aside_fields(store) -> None:
    done = runner.invoke(
        app,
        [
            "prefs",
            "set",
            "pause_on_battery=off",
            "max_cpu_temperature_c=85",
            "max_gpu_temperature_c=80",
            "temperature_margin_c=7",
            "resume_after_seconds=120",
        ],
    )
    assert done.exit_code == 0, done.output
    prefs = store.load()
    assert (prefs.pause_on_battery, prefs.max_cpu_temperature_c, prefs.max_gpu_temperature_c) == (False, 85, 80)
    assert (prefs.temperature_margin_c, prefs.resume_after_seconds) == (7, 120)
    assert runner.invoke(app, ["prefs", "set", "max_cpu_temperature_c=", "pause_on_battery=yes"]).exit_code == 0
    assert store.load().max_cpu_temperature_c is None and store.load().pause_on_battery is True


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["prefs", "set", "max_cpu_temperature_c=hot"], "max_cpu_temperature_c"),
        (["prefs", "set", "max_gpu_temperature_c=200"], "max_gpu_temperature_c"),
        (["prefs", "set", "temperature_margin_c=-2"], "temperature_margin_c"),
        (["prefs", "set", "pause_on_battery=sometimes"], "pause_on_battery"),
        (["prefs", "set", "resume_after_seconds=9999"], "resume_after_seconds"),
        (["prefs", "set", "cpu_share_percent=0"], "cpu_share_percent"),
        (["prefs", "set", "hours=25:00-07:00"], "HH:MM"),
        (["prefs", "set", "colour=red"], "colour"),
        (["prefs", "set", "release_memory_after_minutes=-5"], "release_memory_after_minutes"),
        (["prefs", "set", "no-equals-sign"], "KEY=VALUE"),
        (["pause", "--for", "soon"], "duration"),
    ],
)
def test_bad_input_is_refused_by_name(store, args: list[str], named: str) -> None:
    before = store.load()
    done = runner.invoke(app, args)
    assert done.exit_code == 1 and named in done.output
    assert store.load() == before


def test_parsers() -> None:
    assert parse_duration("90") == 90 and parse_duration("15m") == 900 and parse_duration("1.5h") == 5400
    assert parse_assignments(["suspend_above_cpu_percent=off", "run_mode=when_idle"]) == {
        "suspend_above_cpu_percent": None,
        "run_mode": "when_idle",
    }
