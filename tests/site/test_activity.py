"""The site's running and history index for the console, in a real Redis."""

from __future__ import annotations

import pytest

from hivemind_celery.core import keys
from hivemind_celery.site.activity import HISTORY_MAX, Activity

pytestmark = [pytest.mark.redis]


def test_a_task_runs_then_ends_in_the_history_with_its_cpt(redis_client) -> None:
    redis_client.delete(keys.site_running(), keys.site_history(), keys.site_earned())
    activity = Activity(redis_client)
    activity.started("a1", {"worker": "w1", "cpus": 1.0})
    redis_client.set(keys.task_lock("a1"), b"holder", ex=60)
    assert [t for t, _ in activity.running()] == ["a1"]
    assert activity.info("a1")["worker"] == "w1"
    activity.finished("a1", reward=7)
    activity.finished("a2", reward=0)
    assert activity.running() == []
    assert [t for t, _ in activity.history()] == ["a2", "a1"]
    assert activity.earned() == (7, 7)


def test_a_dead_runs_entry_drops_out_of_running(redis_client) -> None:
    redis_client.delete(keys.site_running())
    activity = Activity(redis_client)
    activity.started("dead", {})
    redis_client.delete(keys.task_lock("dead"))  # its worker died: the lock lapsed
    assert activity.running() == []
    assert redis_client.zcard(keys.site_running()) == 0


def test_the_history_is_capped(redis_client) -> None:
    redis_client.delete(keys.site_history())
    activity = Activity(redis_client)
    for index in range(HISTORY_MAX + 5):
        activity.finished(f"h{index}")
    assert redis_client.zcard(keys.site_history()) == HISTORY_MAX
    assert activity.info("missing") == {}
