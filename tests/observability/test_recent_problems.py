"""Reading the site's problem list back (recent_problems), as ProblemLogHandler
writes it, in a real Redis: newest first, limited, filtered by level, and a
damaged entry skipped rather than failing the console's page."""

from __future__ import annotations

import logging

import pytest

from hivemind_celery.core import keys
from hivemind_celery.observability.logs import ProblemLogHandler, recent_problems

pytestmark = [pytest.mark.redis]


@pytest.fixture
def logger(redis_client):
    redis_client.delete(keys.site_problems())
    logger = logging.getLogger("hivemind.test.recent_problems")
    handler = ProblemLogHandler(redis_client, "bridge", node_id="node-3")
    logger.addHandler(handler)
    logger.propagate = False
    yield logger
    logger.removeHandler(handler)


def test_newest_first_limited_and_by_level(logger, redis_client) -> None:
    assert recent_problems(redis_client) == []
    logger.warning("first")
    logger.error("second", extra={"task_id": "t-9"})
    logger.warning("third")
    found = recent_problems(redis_client)
    assert [p["msg"] for p in found] == ["third", "second", "first"]
    assert found[1]["task_id"] == "t-9" and found[1]["node_id"] == "node-3" and found[1]["process"] == "bridge"
    assert [p["msg"] for p in recent_problems(redis_client, limit=2)] == ["third", "second"]
    assert [p["msg"] for p in recent_problems(redis_client, level="ERROR")] == ["second"]


def test_a_damaged_entry_is_skipped(logger, redis_client) -> None:
    logger.warning("before")
    redis_client.lpush(keys.site_problems(), b"not json", b"[1, 2]")
    logger.warning("after")
    assert [p["msg"] for p in recent_problems(redis_client)] == ["after", "before"]
