"""How often a worker judges its preferences (worker/prefs.py): each second while
it holds a task or a rule reads the host's CPU use, every IDLE_CHECK_SECONDS
otherwise (an idle site should cost its lender little), and at once when a
task arrives. The pause itself, end to end, is tests/task/test_pause.py."""

from __future__ import annotations

from types import SimpleNamespace

from celery.worker import state

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
        assert step.next_wait(1.0) == 1.0  # a task here: a pause must reach it within two seconds
    finally:
        state.reserved_requests.discard(held)
    assert step.next_wait(1.0) == prefs_step.IDLE_CHECK_SECONDS
    assert prefs_step.IDLE_CHECK_SECONDS * 2 < prefs_step.MODE_TTL_SECONDS  # the published mode never lapses


def test_a_task_arriving_wakes_the_check() -> None:
    prefs_step._wake.clear()
    prefs_step.wake_on_task(sender=None, request=None)
    assert prefs_step._wake.is_set()
    prefs_step._wake.clear()
