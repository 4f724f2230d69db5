"""Checkpoints end to end: real `celery worker` subprocesses, real containers,
real signals. A counting task keeps its running sum in its checkpoint
directory; its worker is SIGKILLed (with its pool children, like a lost
host) or SIGTERMed (a reboot), and another worker must finish it from its
last checkpoint with the right sum, every attempt listed and measured."""

from __future__ import annotations

import io
import time
import uuid
import zipfile

import pytest
from celery.result import AsyncResult

from hivemind_celery.core import keys
from hivemind_celery.core.model import TASK_NAME, TaskSpec, TaskStatus
from hivemind_celery.core.settings import Settings
from hivemind_celery.payloads.checkpoint import CheckpointStore
from hivemind_celery.site.prefs import PrefsStore
from hivemind_celery.task.attempts import AttemptLog
from hivemind_celery.task.outcomes import celery_outcome
from tests.fault_kit import kill_tree, wait_until
from tests.services_kit import make_zip
from tests.task.checkpoint_kit import (
    FAST,
    RIGHT_SUM,
    STEPS,
    check_accounting,
    output_of,
    result_file,
    result_json,
    submit,
)

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]


def test_worker_sigkilled_mid_task_resumes_on_another_from_its_last_checkpoint(
    start_worker, celery_app, store, redis_client, redis_url
) -> None:
    victim = start_worker("cpu", concurrency=1, HIVEMIND_CHECKPOINT_INTERVAL="1", **FAST)
    spec, result = submit(celery_app, store, "each")
    checkpoints = CheckpointStore(redis_client, Settings(redis_url=redis_url))
    wait_until(
        lambda: (p := checkpoints.latest(spec.task_id)) is not None and (p.progress or 0) >= 0.25,
        120,
        "a checkpoint a quarter of the way",
    )
    assert kill_tree(victim.proc.pid) >= 2  # the main process and its pool child, at once
    saved = checkpoints.latest(spec.task_id)
    assert saved is not None and saved.progress is not None
    survivor = start_worker("cpu", concurrency=1, HIVEMIND_CHECKPOINT_INTERVAL="1", **FAST)
    outcome = celery_outcome(result, 240)
    survivor.stop()  # each test's workers go with it: none may take the next test's task
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.reason
    done = result_json(store, outcome)
    assert done["sum"] == RIGHT_SUM
    # resumed where a checkpoint left it (at least the one seen before the kill), not from step 1
    assert done["first"] >= round(saved.progress * STEPS) + 1 > 1
    first, second = outcome.attempts
    assert (first.ended, second.ended) == ("lost", "finished")
    assert first.worker == victim.worker_id and second.worker != victim.worker_id
    assert second.resumed_from is not None and second.resumed_progress is not None
    assert second.resumed_progress >= saved.progress
    assert first.checkpoints_saved >= 1
    check_accounting(outcome)
    assert "resumed from the checkpoint" in output_of(redis_client, spec.task_id)
    # ended for good: its checkpoint goes, once the outcome is delivered (RunTask.after_return)
    wait_until(lambda: checkpoints.latest(spec.task_id) is None, 10, "the checkpoint cleared")


def test_worker_sigtermed_checkpoints_in_its_grace_requeues_and_a_restarted_worker_finishes(
    start_worker, celery_app, store, redis_client, redis_url
) -> None:
    # Checkpoints only on SIGTERM, and the worker never saves on its own in this test's time:
    # what resumes is what the task wrote in its grace period.
    worker = start_worker("cpu", concurrency=1, HIVEMIND_CHECKPOINT_INTERVAL="3600", **FAST)
    spec, result = submit(celery_app, store, "term")
    wait_until(lambda: "step 4\n" in output_of(redis_client, spec.task_id), 120, "the task at step 4")
    worker.stop()  # SIGTERM to the main process: Celery's warm shutdown
    assert worker.proc.returncode == 0, worker.log()
    assert "checkpointed at step" in output_of(redis_client, spec.task_id)
    checkpoints = CheckpointStore(redis_client, Settings(redis_url=redis_url))
    saved = checkpoints.latest(spec.task_id)
    assert saved is not None and saved.progress is not None and saved.progress >= 4 / STEPS
    # neither failed nor acknowledged: no outcome, the message is back in its queue
    assert not redis_client.exists(keys.task_outcome(spec.task_id))
    assert AsyncResult(spec.task_id, app=celery_app).state not in ("FAILURE", "SUCCESS")
    assert redis_client.llen("cpu") == 1
    restarted = start_worker("cpu", concurrency=1, HIVEMIND_CHECKPOINT_INTERVAL="3600", worker_id=worker.worker_id, **FAST)
    outcome = celery_outcome(result, 240)
    restarted.stop()
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.reason
    done = result_json(store, outcome)
    assert done["sum"] == RIGHT_SUM and done["first"] == round(saved.progress * STEPS) + 1
    first, second = outcome.attempts
    assert (first.ended, second.ended) == ("requeued", "finished")
    assert first.checkpoints_saved == 1 and second.resumed_from is not None
    check_accounting(outcome)
    assert "the task goes back to its queue" in output_of(redis_client, spec.task_id)
    log = result_file(store, outcome, "execution_log.txt").decode()
    assert "attempts (2), reward their sum:" in log and "1. requeued on " in log and "2. finished on " in log
    assert int(redis_client.get(keys.task_attempts(spec.task_id)) or 0) == 1  # the graceful stop used none up


def test_a_task_that_never_checkpoints_restarts_from_scratch_and_succeeds(start_worker, celery_app, store, redis_client) -> None:
    worker = start_worker("cpu", concurrency=1, HIVEMIND_CHECKPOINT_INTERVAL="1", **FAST)
    spec, result = submit(celery_app, store, "never")
    wait_until(lambda: "step 3\n" in output_of(redis_client, spec.task_id), 120, "the task at step 3")
    worker.stop()
    restarted = start_worker("cpu", concurrency=1, HIVEMIND_CHECKPOINT_INTERVAL="1", **FAST)
    outcome = celery_outcome(result, 240)
    restarted.stop()
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.reason
    assert result_json(store, outcome) == {"sum": RIGHT_SUM, "first": 1}
    first, second = outcome.attempts
    assert first.ended == "requeued" and first.checkpoints_saved == 0 and second.resumed_from is None
    check_accounting(outcome)


def test_a_checkpoint_holding_a_link_to_the_host_is_refused_and_the_task_ends_truthfully(
    start_worker, celery_app, store, redis_client
) -> None:
    worker = start_worker("cpu", concurrency=1, HIVEMIND_CHECKPOINT_INTERVAL="1", **FAST)
    task = (
        "import os, time\n"
        "d = os.environ['HIVEMIND_CHECKPOINT_DIR']\n"
        "open(os.path.join(d, 'state'), 'w').write('1')\n"
        "os.symlink('/etc/shadow', os.path.join(d, 'shadow'))\n"
        "time.sleep(4)\n"
        "print('done', flush=True)\n"
    )
    spec = TaskSpec(task_id=f"ck-link-{uuid.uuid4().hex[:8]}", payload=store.put(make_zip({"main.py": task})))
    result = celery_app.send_task(TASK_NAME, args=[spec.model_dump(mode="json")], task_id=spec.task_id, queue="cpu")
    outcome = celery_outcome(result, 120)
    worker.stop()
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.reason
    reason = "checkpoint not saved: 'shadow': not a regular file or directory"
    assert outcome.attempts[0].notes == [reason]
    assert reason in output_of(redis_client, spec.task_id)
    with zipfile.ZipFile(io.BytesIO(store.get(outcome.result_ref))) as archive:
        names = archive.namelist()
    assert "main.py" in names and not [n for n in names if n.startswith(".hivemind")]  # the worker's, not a result


def test_a_pause_longer_than_the_owners_limit_checkpoints_frees_the_memory_and_resumes_later(
    start_worker, celery_app, store, redis_client, redis_url, docker_client
) -> None:
    prefs = PrefsStore(redis_client, Settings(redis_url=redis_url))
    prefs.client.delete(keys.site_prefs())
    prefs.update(release_memory_after_minutes=0.05)  # 3 s
    try:
        worker = start_worker("cpu", concurrency=1, HIVEMIND_CHECKPOINT_INTERVAL="3600", **FAST)
        spec, result = submit(celery_app, store, "term")
        wait_until(lambda: "step 3\n" in output_of(redis_client, spec.task_id), 120, "the task at step 3")
        prefs.pause()
        attempts = AttemptLog(redis_client, spec.task_id)
        wait_until(lambda: [a.ended for a in attempts.all()] == ["released"], 60, "the paused task released")
        # its memory is free: no container left for it, and the message is back in the queue (and stays there
        # while the site is paused)
        wait_until(lambda: redis_client.llen("cpu") == 1, 30, "the message back in its queue")
        assert not docker_client.containers.list(filters={"label": f"hivemind.task_id={spec.task_id}"})
        time.sleep(3)
        assert redis_client.llen("cpu") == 1 and not redis_client.exists(keys.task_outcome(spec.task_id))
        saved = CheckpointStore(redis_client, Settings(redis_url=redis_url)).latest(spec.task_id)
        assert saved is not None and saved.progress is not None and saved.progress >= 3 / STEPS
        assert "its memory is released" in output_of(redis_client, spec.task_id)
        prefs.resume()
        outcome = celery_outcome(result, 240)
        worker.stop()
    finally:
        prefs.client.delete(keys.site_prefs())
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.reason
    done = result_json(store, outcome)
    assert done["sum"] == RIGHT_SUM and done["first"] == round(saved.progress * STEPS) + 1
    assert [a.ended for a in outcome.attempts] == ["released", "finished"]
    check_accounting(outcome)


def test_a_checkpoint_changed_in_storage_is_refused_and_the_task_starts_over_truthfully(
    start_worker, celery_app, store, redis_client, redis_url
) -> None:
    worker = start_worker("cpu", concurrency=1, HIVEMIND_CHECKPOINT_INTERVAL="3600", **FAST)
    spec, result = submit(celery_app, store, "term")
    wait_until(lambda: "step 3\n" in output_of(redis_client, spec.task_id), 120, "the task at step 3")
    worker.stop()
    saved = CheckpointStore(redis_client, Settings(redis_url=redis_url)).latest(spec.task_id)
    assert saved is not None
    blob = keys.task_checkpoint_blob(spec.task_id, saved.digest)
    forged = (redis_client.get(blob) or b"").replace(b'"sum": ', b'"sum": 9')  # what someone with Redis could do
    assert forged != redis_client.get(blob)
    redis_client.set(blob, forged)
    restarted = start_worker("cpu", concurrency=1, HIVEMIND_CHECKPOINT_INTERVAL="3600", **FAST)
    outcome = celery_outcome(result, 240)
    restarted.stop()
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.reason
    assert result_json(store, outcome) == {"sum": RIGHT_SUM, "first": 1}  # from the beginning, not the forgery
    second = outcome.attempts[1]
    assert second.resumed_from is None and len(second.notes) == 1
    assert "changed in storage" in second.notes[0] and "starting from the beginning" in second.notes[0]
    assert "changed in storage" in output_of(redis_client, spec.task_id)
