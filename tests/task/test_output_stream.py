"""OutputStream flushes buffered output once its interval is up even when no more
output follows: a task that prints one line and then works quietly shows that line
while it runs, not at its end. Real Redis."""

from __future__ import annotations

import pytest
import redis

from hivemind_celery.task.streams import OutputStream, read_output
from tests.nodepool_kit import wait_for

pytestmark = pytest.mark.redis


def test_a_lone_line_is_flushed_without_more_output(redis_client: redis.Redis) -> None:
    stream = OutputStream(redis_client, "t-lone-line", flush_interval=0.3)
    stream.write(b"first line\n")  # within the interval of the stream's start: buffered
    wait_for(
        lambda: read_output(redis_client, "t-lone-line")[1] == b"first line\n",
        timeout=10,
        what="the buffered line flushed by the interval alone",
    )
    stream.write(b"second\n")
    stream.write(b"third\n")
    stream.flush()
    assert read_output(redis_client, "t-lone-line")[1] == b"first line\nsecond\nthird\n"
