"""The hostile modules' shared set-up: a payload store on the module's Redis database,
where a test puts the stranger's zip for the worker to fetch."""

from __future__ import annotations

import pytest

from hivemind_celery.core.settings import Settings
from hivemind_celery.payloads.store import PayloadStore


@pytest.fixture(scope="module")
def store(redis_client, redis_url) -> PayloadStore:
    return PayloadStore(redis_client, Settings(redis_url=redis_url))
