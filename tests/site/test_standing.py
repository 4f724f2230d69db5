"""The bridge's standing with the Node Pool as the site keeps it (site/standing.py),
in a real Redis: what the bridge publishes is what the console reads, a failure
clears "joined" until the next good beat, and an old beat no longer counts."""

from __future__ import annotations

import time

import pytest

from hivemind_celery.core import keys
from hivemind_celery.site.standing import STANDING_TTL, publish_standing, read_standing

pytestmark = [pytest.mark.redis]


@pytest.fixture
def client(redis_client):
    redis_client.delete(keys.bridge_status())
    return redis_client


def test_nothing_published_reads_as_never_joined(client) -> None:
    standing = read_standing(client)
    assert (standing.node_id, standing.pool, standing.status, standing.error, standing.last_beat) == ("", "", "", "", None)
    assert not standing.joined(heartbeat_interval=5.0)


def test_a_reported_status_reads_back_joined(client) -> None:
    before = time.time()
    publish_standing(client, "node-1", "pool.example:50051", status="Idle")
    standing = read_standing(client)
    assert (standing.node_id, standing.pool, standing.status, standing.error) == ("node-1", "pool.example:50051", "Idle", "")
    assert standing.last_beat is not None and before - 1 <= standing.last_beat <= time.time() + 1
    assert standing.joined(heartbeat_interval=5.0)
    assert 0 < client.ttl(keys.bridge_status()) <= STANDING_TTL


def test_a_failure_keeps_the_last_beat_but_is_not_joined_until_the_next_good_one(client) -> None:
    publish_standing(client, "node-1", "pool:1", status="Idle")
    publish_standing(client, "node-1", "pool:1", error="UNAVAILABLE: connect failed token=abc123")
    failed = read_standing(client)
    assert failed.last_beat is not None and failed.status == "Idle"
    assert failed.error.startswith("UNAVAILABLE") and "abc123" not in failed.error, "the secret is masked"
    assert not failed.joined(heartbeat_interval=5.0)
    publish_standing(client, "node-1", "pool:1", status="Busy")
    again = read_standing(client)
    assert again.error == "" and again.status == "Busy"
    assert again.joined(heartbeat_interval=5.0)


def test_joined_lapses_after_three_beats_of_silence(client) -> None:
    publish_standing(client, "node-1", "pool:1", status="Idle")
    standing = read_standing(client)
    assert standing.last_beat is not None
    beat = standing.last_beat
    assert standing.joined(heartbeat_interval=10.0, now=beat + 29.0)
    assert not standing.joined(heartbeat_interval=10.0, now=beat + 31.0)
    # A beat interval under 5 s is judged as 5 s (a fast bridge is not "gone" after 3 s).
    assert standing.joined(heartbeat_interval=1.0, now=beat + 14.0)
    assert not standing.joined(heartbeat_interval=1.0, now=beat + 16.0)


def test_no_redis_to_publish_to_is_not_an_error(client) -> None:
    publish_standing(None, "node-1", "pool:1", status="Idle")
    assert read_standing(client).last_beat is None


def test_a_damaged_beat_time_reads_as_never(client) -> None:
    client.hset(keys.bridge_status(), mapping={"node_id": "n", "pool": "p", "last_beat": "soon"})
    standing = read_standing(client)
    assert standing.node_id == "n" and standing.last_beat is None and not standing.joined(5.0)
