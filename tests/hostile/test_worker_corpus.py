"""The corpus through a real worker: every hostile zip, spec and task id is
sent as `hivemind.run_task` to a real `celery worker` subprocess and must come
back REJECTED with a reason naming what was wrong (and, where a task id was
usable, with a result zip). After the whole corpus the same worker still runs a
good task. (Some cases repeat tests/task/test_worker.py; here they are the catalogue.)"""

from __future__ import annotations

import uuid

import pytest

from hivemind_celery.core.model import TASK_NAME, TaskOutcome, TaskSpec, TaskStatus
from hivemind_celery.payloads.store import PayloadStore
from hivemind_celery.task.outcomes import celery_outcome
from tests.hostile.cases import BAD_TASK_IDS, SPEC_CASES, ZIP_CASES, Case
from tests.services_kit import docker_leftovers, make_zip

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture(scope="module")
def worker(start_worker):
    return start_worker("cpu")


def good_spec(store: PayloadStore, **fields: object) -> dict:
    spec = TaskSpec(task_id=f"h-{uuid.uuid4().hex[:10]}", payload=store.put(make_zip({"main.py": "print('ok')"})))
    return {**spec.model_dump(mode="json"), **fields}


def send(celery_app, spec_json: dict, task_id: str | None = None):
    return celery_app.send_task(TASK_NAME, args=[spec_json], task_id=task_id or spec_json.get("task_id") or None, queue="cpu")


def outcome_of(result, timeout: float = 180) -> TaskOutcome:
    return celery_outcome(result, timeout)


@pytest.mark.parametrize("case", ZIP_CASES, ids=str)
def test_hostile_zip_is_rejected_by_the_worker(worker, celery_app, store, case: Case) -> None:
    data = case.make()
    spec = TaskSpec(task_id=f"h-{case.name}-{uuid.uuid4().hex[:6]}", payload=store.put(data))
    outcome = outcome_of(send(celery_app, spec.model_dump(mode="json")))
    assert outcome.status is TaskStatus.REJECTED, (case.name, outcome.status, outcome.reason)
    assert "invalid task zip" in outcome.reason
    assert case.reason.lower() in outcome.reason.lower(), outcome.reason
    assert outcome.result_ref, "a rejected task still gets a result zip"


@pytest.mark.parametrize(("name", "fields", "field"), SPEC_CASES, ids=[c[0] for c in SPEC_CASES])
def test_hostile_spec_is_rejected_naming_the_field(worker, celery_app, store, name: str, fields: dict, field: str) -> None:
    outcome = outcome_of(send(celery_app, good_spec(store, **fields)))
    assert outcome.status is TaskStatus.REJECTED, (name, outcome.status, outcome.reason)
    assert field in outcome.reason, outcome.reason


@pytest.mark.parametrize("task_id", BAD_TASK_IDS, ids=lambda t: repr(t)[:24])
def test_task_id_with_separators_or_shell_metacharacters_is_rejected(
    worker, celery_app, store, docker_client, task_id: str
) -> None:
    mine = f"hivemind.worker={worker.worker_id}"
    assert docker_leftovers(docker_client, mine) == ([], [])  # earlier cases' containers are gone
    spec = good_spec(store, task_id=task_id)
    outcome = outcome_of(send(celery_app, spec, task_id=task_id or None))
    assert outcome.status is TaskStatus.REJECTED
    assert "task_id" in outcome.reason, outcome.reason
    # Never used for a name: no container or volume was made for it.
    assert docker_leftovers(docker_client, mine, timeout=0) == ([], [])


def test_worker_still_serves_after_the_corpus(worker, celery_app, store) -> None:
    """Runs last in this module (pytest keeps file order): the same worker process
    that took every case above runs a good task."""
    spec = good_spec(store)
    outcome = outcome_of(send(celery_app, spec))
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.reason
    assert "ok" in outcome.log_tail
    assert worker.proc.poll() is None
    assert "WorkerLostError" not in worker.log()
