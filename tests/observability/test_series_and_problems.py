"""The console's bounded data in a real Redis: time series trimmed by count and
age, the problem list fed by the logging handler (masked, capped, carrying task
and node ids, never failing a log call)."""

from __future__ import annotations

import json
import logging
import time

import pytest
import redis

from hivemind_celery.core import keys
from hivemind_celery.observability.logs import PROBLEMS_MAX, ProblemLogHandler
from hivemind_celery.observability.series import HOST_MAX_AGE, SeriesStore

pytestmark = [pytest.mark.redis]


def test_a_series_keeps_the_newest_points_up_to_its_cap(redis_client) -> None:
    store = SeriesStore(redis_client)
    key = "hm:test:series"
    redis_client.delete(key)
    for value in range(25):
        store.append(key, {"v": value}, max_points=10, ttl=60)
    points = store.read(key)
    assert [p["v"] for p in points] == list(range(15, 25))
    assert 0 < redis_client.ttl(key) <= 60


def test_a_read_drops_points_older_than_the_age_and_damaged_entries(redis_client) -> None:
    store = SeriesStore(redis_client)
    key = keys.host_series("w-age")
    redis_client.delete(key)
    old = time.time() - HOST_MAX_AGE - 10
    redis_client.rpush(key, json.dumps({"t": old, "cpu_percent": 1}), b"not json", json.dumps([1, 2]))
    store.add_host_sample("w-age", {"cpu_percent": 2})
    assert [p["cpu_percent"] for p in store.host("w-age")] == [2]
    assert "w-age" in store.hosts()


def test_task_samples_keep_the_task_series(redis_client) -> None:
    store = SeriesStore(redis_client)
    redis_client.delete(keys.task_series("t-1"))
    store.add_task_sample("t-1", {"cpu_percent": 50.0, "memory_bytes": 1024})
    store.add_task_sample("t-1", {"cpu_percent": 75.0, "memory_bytes": 2048})
    assert [p["memory_bytes"] for p in store.task("t-1")] == [1024, 2048]


@pytest.fixture
def problem_logger(redis_client):
    redis_client.delete(keys.site_problems())
    logger = logging.getLogger("hivemind.test.problems")
    handler = ProblemLogHandler(redis_client, "worker", node_id="node-7")
    logger.addHandler(handler)
    logger.propagate = False
    yield logger
    logger.removeHandler(handler)


def problems(redis_client) -> list[dict]:
    return [json.loads(raw) for raw in redis_client.lrange(keys.site_problems(), 0, -1)]


def test_warnings_and_errors_reach_the_list_newest_first_masked(problem_logger, redis_client) -> None:
    problem_logger.info("not a problem")
    problem_logger.warning("login failed password=hunter2 for %s", "site1", extra={"task_id": "t-9"})
    try:
        raise ValueError("token: abc.def")
    except ValueError:
        problem_logger.exception("it broke")
    found = problems(redis_client)
    assert [p["level"] for p in found] == ["ERROR", "WARNING"]
    error, warning = found
    assert warning["msg"] == "login failed password=[redacted] for site1"
    assert warning["task_id"] == "t-9" and warning["node_id"] == "node-7" and warning["process"] == "worker"
    assert "abc.def" not in error["exc"] and error["exc"].startswith("ValueError")
    assert "hunter2" not in json.dumps(found)


def test_the_list_is_capped(problem_logger, redis_client) -> None:
    for index in range(PROBLEMS_MAX + 20):
        problem_logger.warning("problem %d", index)
    found = problems(redis_client)
    assert len(found) == PROBLEMS_MAX
    assert found[0]["msg"] == f"problem {PROBLEMS_MAX + 19}"


def test_a_redis_that_is_away_never_fails_the_log_call(caplog) -> None:
    away = redis.Redis(port=1, socket_connect_timeout=0.2)
    logger = logging.getLogger("hivemind.test.problems.away")
    logger.addHandler(ProblemLogHandler(away, "bridge"))
    logger.propagate = False
    logger.error("still fine")  # raises nothing
