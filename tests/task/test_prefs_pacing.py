"""How often a worker judges its preferences (worker/prefs.py): each second while
a rule reads the host's CPU use, every IDLE_CHECK_SECONDS otherwise (an idle site
should cost its lender little), at once when a task arrives and at once when the
owner saves them (a real Redis channel); each second while it holds a task only
where that channel cannot be watched. The pause itself, end to end, is
tests/task/test_pause.py."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
import redis
from celery.worker import state

from hivemind_celery.core import keys
from hivemind_celery.core.settings import Settings
from hivemind_celery.site.prefs import PrefsStore, watch_changes
from hivemind_celery.worker import prefs as prefs_step


class _Request:
    id = "t-1"


def test_idle_and_unsensing_waits_long_else_each_interval() -> None:
    step = prefs_step.PrefsStep(parent=None)
    step.gate = SimpleNamespace(senses=False)  # type: ignore[assignment]
    assert step.next_wait(1.0) == prefs_step.IDLE_CHECK_SECONDS
    step.gate.senses = True  # type: ignore[union-attr]
    assert step.next_wait(1.0) == 1.0
    step.gate.senses = False  # type: ignore[union-attr]
    held = _Request()  # Celery keeps the worker's requests in a WeakSet
    state.reserved_requests.add(held)
    try:
        # A task here, and the owner's saves wake the check: the clock, battery and heat are looked at every few seconds.
        step._watch = object()
        assert step.next_wait(1.0) == prefs_step.IDLE_CHECK_SECONDS
        step._watch = None  # no watch: a pause must reach the task within two seconds by itself
        assert step.next_wait(1.0) == 1.0
    finally:
        state.reserved_requests.discard(held)
    assert step.next_wait(1.0) == prefs_step.IDLE_CHECK_SECONDS
    assert prefs_step.IDLE_CHECK_SECONDS * 2 < prefs_step.MODE_TTL_SECONDS  # the published mode never lapses


def test_a_task_arriving_wakes_the_check() -> None:
    prefs_step._wake.clear()
    prefs_step.wake_on_task(sender=None, request=None)
    assert prefs_step._wake.is_set()
    prefs_step._wake.clear()


@pytest.mark.redis
def test_saving_the_preferences_wakes_a_watching_worker(redis_client: redis.Redis) -> None:
    woken = threading.Event()
    watch = watch_changes(redis_client, woken.set)
    assert watch is not None
    try:
        store = PrefsStore(redis_client, Settings())
        assert not woken.wait(0.5)  # nothing saved yet: no wake
        store.pause()
        assert woken.wait(10), "no wake after the preferences were saved"
        woken.clear()
        store.resume()
        assert woken.wait(10), "no wake after the owner resumed"
    finally:
        watch.stop()
        redis_client.delete(keys.site_prefs())
