"""The bridge modules' set-up: their Redis database emptied per test, a RecordingPool
(tests/bridge_kit.py) and a factory for real bridges against both.

Each module still picks its own fixed Redis database (its `redis_url` fixture), so
people running the bridge tests at once never share queues."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from bridge.server import Bridge
from hivemind_celery.core.settings import Settings
from tests.bridge_kit import RecordingPool, bridge_settings


@pytest.fixture
def db(redis_url: str) -> Iterator[redis.Redis]:
    """This module's Redis database, emptied before each test."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def pool() -> Iterator[RecordingPool]:
    recording = RecordingPool().start()
    yield recording
    recording.stop()


@pytest.fixture
def start_bridge(redis_url: str, pool: RecordingPool, db: redis.Redis) -> Iterator[Callable[..., Bridge]]:
    """Factory: start_bridge(**settings values) or start_bridge(settings) -> a started Bridge
    on this module's database and `pool`; all are stopped after the test."""
    started: list[Bridge] = []

    def start(settings: Settings | None = None, **values: Any) -> Bridge:
        bridge = Bridge(settings or bridge_settings(redis_url, pool, **values)).start()
        started.append(bridge)
        return bridge

    yield start
    for bridge in started:
        bridge.stop(grace=0)
