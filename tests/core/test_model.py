"""The task model and the settings: plain data, validated, errors name the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from hivemind_celery.core.model import Queue, TaskOutcome, TaskSpec, TaskStatus
from hivemind_celery.core.settings import Settings

REF = "sha256:" + "a" * 64


def field_of(exc: ValidationError) -> str:
    return ".".join(str(p) for p in exc.errors()[0]["loc"])


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"task_id": "../etc"}, "task_id"),
        ({"task_id": "a;rm -rf /"}, "task_id"),
        ({"task_id": ""}, "task_id"),
        ({"payload": "abc"}, "payload"),
        ({"cpus": -1}, "cpus"),
        ({"cpus": 0}, "cpus"),
        ({"memory_mb": 0}, "memory_mb"),
        ({"memory_mb": "lots"}, "memory_mb"),
        ({"gpus": -2}, "gpus"),
        ({"timeout": 0}, "timeout"),
        ({"network": "host"}, "network"),
        ({"env": {"1BAD": "x"}}, "env"),
        ({"command": []}, "command"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_spec_names_the_field(changes, field):
    with pytest.raises(ValidationError) as info:
        TaskSpec(**({"task_id": "t1", "payload": REF} | changes))
    assert field_of(info.value) == field


def test_gpu_request_routes_to_gpu_queue():
    assert TaskSpec(task_id="t", payload=REF).queue is Queue.CPU
    assert TaskSpec(task_id="t", payload=REF, gpus=1).queue is Queue.GPU
    assert TaskSpec(task_id="t", payload=REF, gpu_memory_mb=1024).queue is Queue.GPU


def test_outcome_round_trips_as_json():
    outcome = TaskOutcome(task_id="t", status=TaskStatus.FAILED, exit_code=2, reason="exit code 2")
    again = TaskOutcome.model_validate_json(outcome.model_dump_json())
    assert again == outcome and again.duration == 0.0 and not again.succeeded


def test_visibility_timeout_must_exceed_hard_limit():
    with pytest.raises(ValidationError, match="VISIBILITY_TIMEOUT"):
        Settings(max_timeout=7200, visibility_timeout=3600)
    settings = Settings()
    assert settings.visibility_timeout > settings.hard_time_limit > settings.max_timeout


def test_redis_url_feeds_every_role_unless_overridden(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://example:6379/3")
    monkeypatch.setenv("HIVEMIND_RESULT_BACKEND", "redis://other:6379/4")
    settings = Settings()
    assert settings.broker == settings.payload_redis == "redis://example:6379/3"
    assert settings.backend == "redis://other:6379/4"


def test_allowed_images_from_comma_list(monkeypatch):
    monkeypatch.setenv("HIVEMIND_ALLOWED_IMAGES", "a:1, b:2")
    settings = Settings()
    assert settings.image_allowed("a:1") and settings.image_allowed("b:2")
    assert settings.image_allowed(settings.task_image) and not settings.image_allowed("c:3")


def test_celery_config_reliability_settings():
    from hivemind_celery.celery_app import celery_config

    conf = celery_config(Settings())
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["task_create_missing_queues"] is False
    assert conf["task_default_queue"] == "cpu"
    assert {q.name for q in conf["task_queues"]} == {"cpu", "gpu"}
    assert conf["broker_transport_options"]["visibility_timeout"] > conf["task_time_limit"]
    # A Redis restart must not cancel running tasks (docs/RELIABILITY.md).
    assert conf["worker_cancel_long_running_tasks_on_connection_loss"] is False
    assert conf["broker_connection_retry_on_startup"] and conf["worker_send_task_events"]
    assert conf["result_extended"]
