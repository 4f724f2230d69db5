"""One way to reach the site's Redis from a URL (payloads, registry, task keys).

Every part of the worker and the bridge talks to the same payload Redis
(HIVEMIND_PAYLOAD_REDIS_URL, default REDIS_URL); building the client here keeps
that choice in one place."""

from __future__ import annotations

from typing import Any

import redis

from hivemind_celery.core.settings import Settings


def redis_from_url(url: str, **options: Any) -> redis.Redis:
    return redis.Redis.from_url(url, **options)


def payload_redis(settings: Settings) -> redis.Redis:
    """The Redis that holds payloads, results, task keys and the site registry."""
    return redis_from_url(settings.payload_redis)
