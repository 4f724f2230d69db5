"""The task modules' shared set-up: a payload store on the module's Redis database
(where a test puts the task zip for the worker to fetch) and the GPU leases there."""

from __future__ import annotations

import pytest

from hivemind_celery.core.settings import Settings
from hivemind_celery.payloads.store import PayloadStore
from hivemind_celery.site.gpu_allocator import GpuAllocator


@pytest.fixture(scope="module")
def store(redis_client, redis_url) -> PayloadStore:
    return PayloadStore(redis_client, Settings(redis_url=redis_url))


@pytest.fixture(scope="module")
def leases(redis_client) -> GpuAllocator:
    return GpuAllocator(redis_client)  # this host's, as the workers see it
