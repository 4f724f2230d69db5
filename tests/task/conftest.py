"""The task modules' shared set-up: a payload store on the module's Redis database
(where a test puts the task zip for the worker to fetch), the GPU leases there and
the site's preferences."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hivemind_celery.core.settings import Settings
from hivemind_celery.payloads.store import PayloadStore
from hivemind_celery.site.gpu_allocator import GpuAllocator
from hivemind_celery.site.prefs import PrefsStore


@pytest.fixture(scope="module")
def store(redis_client, redis_url) -> PayloadStore:
    return PayloadStore(redis_client, Settings(redis_url=redis_url))


@pytest.fixture(scope="module")
def leases(redis_client) -> GpuAllocator:
    return GpuAllocator(redis_client)  # this host's, as the workers see it


@pytest.fixture
def prefs(redis_client) -> Iterator[PrefsStore]:
    """The site's preferences on the module's database, emptied before and after."""
    store = PrefsStore(redis_client, Settings())
    store.client.delete("hm:site:prefs")
    yield store
    store.client.delete("hm:site:prefs")
