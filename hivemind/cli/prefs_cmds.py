"""`hivemind prefs show|set`, `hivemind pause [--for 2h]`, `hivemind resume`: the
owner's preferences (site/prefs.py), which every worker of the site obeys within
a second or two."""

from __future__ import annotations

import json
import re
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from hivemind.cli.common import fail

prefs_app = typer.Typer(no_args_is_help=True, help="The owner's preferences: when and how much to share.")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Fields whose empty value means "no such rule" (None).
_OPTIONAL = {
    "suspend_above_cpu_percent",
    "hours",
    "gpus",
    "paused_until",
    "max_cpu_temperature_c",
    "max_gpu_temperature_c",
    "release_memory_after_minutes",
}


def parse_duration(text: str) -> float:
    """ "90", "90s", "15m", "2h", "1.5d" -> seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 30m, 2h or 1d")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]


def parse_assignments(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE words -> fields for PrefsStore.update (values checked there)."""
    fields: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"{pair!r} is not KEY=VALUE")
        value = value.strip()
        if key in _OPTIONAL and value.lower() in ("", "none", "off", "all"):
            fields[key] = None
        elif key == "gpus":
            fields[key] = [item.strip() for item in value.split(",") if item.strip()]
        else:
            fields[key] = value
    return fields


def _store():  # type: ignore[no-untyped-def]
    from hivemind_celery.core import get_settings, payload_redis
    from hivemind_celery.site import PrefsStore

    settings = get_settings()
    return PrefsStore(payload_redis(settings), settings)


def _show(store: Any, as_json: bool) -> None:
    prefs, mode = store.load(), store.mode()
    if as_json:
        typer.echo(json.dumps({"preferences": prefs.model_dump(mode="json"), "mode": mode.model_dump()}, indent=2))
        return
    table = Table(title="Preferences")
    table.add_column("key")
    table.add_column("value")
    for key, value in prefs.model_dump(mode="json").items():
        if key == "hours" and value is not None:
            value = f"{value['start']}-{value['end']}"
        table.add_row(key, "—" if value is None else str(value))
    console = Console()
    console.print(table)
    console.print(f"site: {mode.state}" + (f" — {mode.reason}" if mode.reason else ""))


@prefs_app.command("show")
def show(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """The preferences in force and what the workers decided from them."""
    import redis

    try:
        _show(_store(), as_json)
    except redis.RedisError as exc:
        raise fail(f"cannot read the preferences: {exc}") from exc


@prefs_app.command("set")
def set_(pairs: list[str] = typer.Argument(..., help="KEY=VALUE ..., e.g. hours=22:00-07:00 cpu_share_percent=50")) -> None:
    """Change preferences (an empty value clears an optional rule: hours=)."""
    import redis

    from hivemind_celery.site import PreferencesError

    try:
        store = _store()
        store.update(**parse_assignments(pairs))
        _show(store, as_json=False)
    except (ValueError, PreferencesError) as exc:
        raise fail(str(exc)) from exc
    except redis.RedisError as exc:
        raise fail(f"cannot store the preferences: {exc}") from exc


def pause(
    for_: str | None = typer.Option(None, "--for", help="Pause for a while (30m, 2h, 1d); default: until resumed."),
) -> None:
    """Freeze the site's running tasks and take no new ones."""
    import redis

    from hivemind_celery.site import PreferencesError

    try:
        seconds = parse_duration(for_) if for_ is not None else None
        prefs = _store().pause(seconds)
    except (ValueError, PreferencesError) as exc:
        raise fail(str(exc)) from exc
    except redis.RedisError as exc:
        raise fail(f"cannot store the pause: {exc}") from exc
    until = f" until {prefs.paused_until.astimezone():%Y-%m-%d %H:%M}" if prefs.paused_until else " until resumed"
    typer.echo(f"paused{until}; the workers freeze their tasks within 2 s")


def resume() -> None:
    """End a pause; the hours and owner-busy rules still apply."""
    import redis

    try:
        _store().resume()
    except redis.RedisError as exc:
        raise fail(f"cannot store the resume: {exc}") from exc
    typer.echo("resumed; the workers thaw their tasks within 2 s")


def register(app: typer.Typer) -> None:
    app.add_typer(prefs_app, name="prefs")
    app.command("pause")(pause)
    app.command("resume")(resume)
