"""The Node Pool modules' shared set-up: a client for the module's `pool` (each module
starts its pool with its own users and settings, through nodepool_kit.serving_pool)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nodepool.server import RunningPool
from tests.nodepool_kit import Client


@pytest.fixture()
def client(pool: RunningPool) -> Iterator[Client]:
    c = Client(pool.address)
    yield c
    c.close()
