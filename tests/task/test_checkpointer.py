"""The checkpointer's rules over a real directory and a real Redis: save only
what changed, keep the previous checkpoint on a refusal, report a refusal
once it is seen twice in a row (a read may catch the task mid-write), and at
the run's end at once."""

from __future__ import annotations

import pytest

from hivemind_celery.core.settings import Settings
from hivemind_celery.payloads.checkpoint import CheckpointStore
from hivemind_celery.runtime.archive import copy_dir
from hivemind_celery.task.attempts import AttemptLog
from hivemind_celery.task.checkpointer import Checkpointer

pytestmark = [pytest.mark.redis]

LINK = "checkpoint not saved: 'link': not a regular file or directory"


def test_saves_changes_only_and_reports_a_lasting_refusal_once(redis_client, redis_url, tmp_path) -> None:
    settings = Settings(redis_url=redis_url, checkpoint_max_bytes=1000)
    store = CheckpointStore(redis_client, settings)
    attempts = AttemptLog(redis_client, "t-ck")
    attempts.begin("w1", None)
    told: list[str] = []
    checkpointer = Checkpointer("t-ck", store, settings, attempts, told.append)

    def read():  # type: ignore[no-untyped-def]
        return copy_dir(tmp_path, settings.checkpoint_max_bytes)

    (tmp_path / "state").write_text("1")
    (tmp_path / "link").symlink_to("/etc/passwd")
    assert not checkpointer.capture(read()) and told == []  # maybe mid-write: quiet, tried again soon
    assert not checkpointer.capture(read()) and told == [LINK]  # twice in a row: reported
    assert store.latest("t-ck") is None
    (tmp_path / "link").unlink()
    assert checkpointer.capture(read())
    first = store.latest("t-ck")
    assert first is not None and first.attempt == 1 and first.worker == settings.worker_id
    assert not checkpointer.capture(read())  # unchanged: not stored again
    (tmp_path / "state").write_text("2")
    assert checkpointer.capture(read())
    second = store.latest("t-ck")
    assert second is not None and second.digest != first.digest
    assert attempts.current is not None and attempts.current.checkpoints_saved == 2
    assert attempts.current.notes == [LINK]
    # at the run's end there is no next try: a new refusal is reported at once, the saved one stays
    (tmp_path / "big").write_bytes(b"x" * 2000)
    checkpointer.finish(read())
    assert len(told) == 2 and "checkpoint limit of 1000 bytes" in told[1]
    assert store.latest("t-ck") == second
