"""The site's preferences and mode in Redis, shared by every worker, the bridge,
the CLI and the console.

Preferences live under one key as JSON; until someone saves them, the
environment's HIVEMIND_PREFS_* defaults apply. The mode is what the workers last
decided from them (worker/prefs.py publishes it at each check, every 1-4 s);
readers that find none (no worker up yet) see the site running. Saving them
publishes a message the workers watch, so a change is judged at once."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from pydantic import ValidationError

from hivemind_celery.core import keys
from hivemind_celery.core.errors import HivemindError
from hivemind_celery.core.prefs import RUNNING, Preferences, SiteMode
from hivemind_celery.core.settings import Settings, get_settings

# A published mode older than this is stale (its worker gone): readers see running
# again rather than a pause nobody enforces.
MODE_TTL_SECONDS = 10
# How long the preferences watch's thread waits on its connection between wakes.
WATCH_IDLE_SECONDS = 30.0

log = logging.getLogger(__name__)


class PreferencesError(HivemindError, ValueError):
    """Preferences that do not validate; the message names the field and why."""


def defaults(settings: Settings) -> Preferences:
    """The preferences the environment gives until someone saves others."""
    return _validated(
        {
            "run_mode": settings.prefs_run_mode,
            "suspend_above_cpu_percent": settings.prefs_suspend_above_cpu_percent,
            "hours": settings.prefs_hours or None,
            "cpu_share_percent": settings.prefs_cpu_share_percent,
            "memory_share_percent": settings.prefs_memory_share_percent,
            "gpus": settings.prefs_gpus or None,
            "keep_free_disk_gb": settings.prefs_keep_free_disk_gb,
            "pause_on_battery": settings.prefs_pause_on_battery,
            "max_cpu_temperature_c": settings.prefs_max_cpu_temperature_c,
            "max_gpu_temperature_c": settings.prefs_max_gpu_temperature_c,
            "temperature_margin_c": settings.prefs_temperature_margin_c,
            "resume_after_seconds": settings.prefs_resume_after_seconds,
            "release_memory_after_minutes": settings.prefs_release_memory_after_minutes,
        }
    )


def _validated(fields: dict[str, Any]) -> Preferences:
    try:
        return Preferences.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'preferences'}: {error['msg']}" for error in exc.errors()
        )
        raise PreferencesError(f"invalid preferences: {problems}") from None


class PrefsStore:
    def __init__(self, client: redis.Redis, settings: Settings | None = None) -> None:
        self.client = client
        self.settings = settings or get_settings()

    # --- preferences -----------------------------------------------------------
    def load(self) -> Preferences:
        raw = self.client.get(keys.site_prefs())
        if raw is None:
            return defaults(self.settings)
        try:
            return Preferences.model_validate_json(raw)
        except ValidationError:
            # Written by an older version or by hand: the defaults, never a crash.
            return defaults(self.settings)

    def save(self, prefs: Preferences) -> None:
        """Store them, and tell the workers (they judge them again at once)."""
        checked = _validated(prefs.model_dump())
        pipe = self.client.pipeline(transaction=False)
        pipe.set(keys.site_prefs(), checked.model_dump_json())
        pipe.publish(keys.site_prefs_changed(), b"1")
        pipe.execute()

    def update(self, **fields: Any) -> Preferences:
        """Change the named fields (None clears an optional one); unknown names and
        bad values raise PreferencesError and change nothing."""
        current = self.load().model_dump()
        current.update(fields)
        updated = _validated(current)
        self.save(updated)
        return updated

    def pause(self, for_seconds: float | None = None) -> Preferences:
        """Pause until resumed, or for a while (`pause --for 2h`)."""
        if for_seconds is None:
            return self.update(run_mode="never", paused_until=None)
        if for_seconds <= 0:
            raise PreferencesError(f"pause for {for_seconds:g} s: the duration must be positive")
        until = datetime.now(UTC) + timedelta(seconds=for_seconds)
        return self.update(paused_until=until)

    def resume(self) -> Preferences:
        """End an owner's pause; the hours and the owner-busy rules still apply."""
        prefs = self.load()
        run_mode = prefs.run_mode
        if run_mode == "never":
            run_mode = defaults(self.settings).run_mode
            run_mode = "always" if run_mode == "never" else run_mode
        return self.update(run_mode=run_mode, paused_until=None)

    # --- the mode the workers decided ------------------------------------------
    # Each worker host publishes its own decision (its clock, its owner's use of it);
    # the site is paused only while every host that decided lately is paused, so one
    # busy owner's machine does not turn the whole site away.
    def publish_mode(self, mode: SiteMode, worker_id: str = "site") -> None:
        entry = json.dumps({**mode.model_dump(), "at": time.time()})
        self.client.hset(keys.site_modes(), worker_id, entry)

    def mode(self) -> SiteMode:
        now = time.time()
        fresh: list[SiteMode] = []
        stale: list[bytes | str] = []
        for field, raw in self.client.hgetall(keys.site_modes()).items():
            try:
                entry = json.loads(raw)
                decided = SiteMode(state=entry["state"], reason=entry.get("reason", ""))
                at = float(entry["at"])
            except (ValueError, KeyError, TypeError, ValidationError):
                stale.append(field)
                continue
            if now - at > MODE_TTL_SECONDS:
                stale.append(field)
            else:
                fresh.append(decided)
        if stale:
            self.client.hdel(keys.site_modes(), *stale)
        if fresh and all(decided.paused for decided in fresh):
            return fresh[0]
        return RUNNING

    def publish_worker_mode(self, worker_id: str, mode: SiteMode) -> None:
        """One worker's decision for its host: the key its running tasks poll, and its
        entry in the site's modes."""
        pipe = self.client.pipeline(transaction=False)
        pipe.set(keys.worker_mode(worker_id), mode.model_dump_json(), ex=MODE_TTL_SECONDS)
        pipe.hset(keys.site_modes(), worker_id, json.dumps({**mode.model_dump(), "at": time.time()}))
        pipe.execute()

    def forget_worker(self, worker_id: str) -> None:
        """The worker stops: its decision no longer speaks for the site."""
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(keys.worker_mode(worker_id))
        pipe.hdel(keys.site_modes(), worker_id)
        pipe.execute()


def watch_changes(client: redis.Redis, on_change: Callable[[], None]) -> Any:
    """Call `on_change` (on a thread of redis-py's) whenever the preferences are saved;
    the thread, to `.stop()`, or None when Redis cannot be watched (then poll)."""

    def on_error(exc: BaseException, _pubsub: Any, _thread: Any) -> None:
        log.debug("preferences watch: %s; resubscribing", exc)
        on_change()  # a save may have been missed meanwhile
        time.sleep(1.0)  # the pubsub reconnects and subscribes again on its next read

    try:
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(**{keys.site_prefs_changed(): lambda _message: on_change()})
        # A message ends the wait at once; the timeout only paces an idle thread.
        return pubsub.run_in_thread(sleep_time=WATCH_IDLE_SECONDS, daemon=True, exception_handler=on_error)
    except redis.RedisError as exc:
        log.warning("cannot watch the preferences (%s); checking them on a timer", exc)
        return None


def worker_paused(client: redis.Redis, worker_id: str) -> bool:
    """Should this worker's running tasks be frozen now? (polled by each task's run)"""
    return _read_mode(client.get(keys.worker_mode(worker_id))).paused


def _read_mode(raw: bytes | str | None) -> SiteMode:
    if raw is None:
        return RUNNING
    try:
        return SiteMode.model_validate_json(raw)
    except ValidationError:
        return RUNNING
