"""Payload store (real Redis), the run-once guard, and log redaction."""

from __future__ import annotations

import json
import logging

import pytest

from hivemind_celery.core.model import TaskOutcome, TaskStatus
from hivemind_celery.core.settings import Settings
from hivemind_celery.observability.logs import JsonFormatter, redact
from hivemind_celery.payloads.store import PayloadMissing, PayloadStore, PayloadTooLarge
from hivemind_celery.task.idempotency import TaskGuard


@pytest.mark.redis
def test_payloads_are_content_addressed_with_ttl(redis_client, redis_url):
    store = PayloadStore(redis_client, Settings(redis_url=redis_url, payload_ttl=120))
    ref = store.put(b"zip bytes")
    assert ref == store.put(b"zip bytes")  # same bytes, one copy
    assert store.get(ref) == b"zip bytes"
    assert 0 < redis_client.ttl("hm:payload:" + ref.removeprefix("sha256:")) <= 120
    store.delete(ref)
    with pytest.raises(PayloadMissing, match="not in the store"):
        store.get(ref)
    with pytest.raises(PayloadMissing, match="not a payload reference"):
        store.get("sha256:../../etc")


@pytest.mark.redis
def test_payload_size_limit(redis_client, redis_url):
    store = PayloadStore(redis_client, Settings(redis_url=redis_url, payload_max_bytes=10))
    with pytest.raises(PayloadTooLarge, match="above the limit of 10 bytes"):
        store.put(b"x" * 11)


@pytest.mark.redis
def test_guard_lock_is_exclusive_and_outcome_kept(redis_client):
    first, second = TaskGuard(redis_client, "guard-1"), TaskGuard(redis_client, "guard-1")
    assert first.claim().attempt == 1  # the lock, and the first attempt counted
    busy = second.claim()
    assert busy.attempt == 0 and busy.outcome is None  # held: neither lock nor outcome, nothing counted
    outcome = TaskOutcome(task_id="guard-1", status=TaskStatus.SUCCEEDED, exit_code=0)
    first.store_outcome(outcome)
    first.release()
    assert second.wait_for_outcome(deadline=0) == outcome
    # A later delivery gets the stored outcome, takes no lock and counts no attempt.
    assert second.claim().outcome == outcome
    assert redis_client.get("hm:task:guard-1:lock") is None
    redis_client.delete("hm:task:guard-1:outcome")
    assert second.claim().attempt == 2  # attempts add up across runs (a lost worker's included)
    second.release()


@pytest.mark.redis
def test_a_released_lock_stays_released_while_its_refresher_winds_down(redis_client):
    """release() does not wait for the lock's refresher thread: a refresh that
    lands after the delete finds no lock holding its token and recreates nothing."""
    import time

    guard = TaskGuard(redis_client, "guard-3", lock_ttl=3)  # refreshed every second
    assert guard.claim().attempt
    time.sleep(1.1)  # the refresher is about its work
    guard.release()
    time.sleep(1.2)  # past its next beat, had it not stopped
    assert redis_client.get("hm:task:guard-3:lock") is None
    other = TaskGuard(redis_client, "guard-3", lock_ttl=3)
    assert other.claim().attempt
    other.release()
    assert guard._refresher is not None and not guard._refresher.is_alive()


@pytest.mark.redis
def test_guard_lock_expires_when_holder_dies(redis_client):
    dead = TaskGuard(redis_client, "guard-2", lock_ttl=1)
    assert redis_client.set("hm:task:guard-2:lock", "someone-dead", nx=True, ex=1)
    import time

    time.sleep(1.2)
    assert dead.claim().attempt == 1
    dead.release()


def test_redact_masks_passwords_tokens_and_jwts():
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyIjoiYSJ9.c2lnbmF0dXJl"
    text = redact(f"login password=hunter2 token: abc123 Authorization: Bearer {jwt}")
    assert "hunter2" not in text and "abc123" not in text and jwt not in text


def test_json_log_lines_carry_extras_and_hide_secrets():
    record = logging.makeLogRecord(
        {
            "msg": "login with password=%s",
            "args": ("hunter2",),
            "levelname": "INFO",
            "name": "t",
            "task_id": "t-1",
            "node_id": "n-1",
        }
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["task_id"] == "t-1" and line["node_id"] == "n-1"
    assert "hunter2" not in json.dumps(line)
