"""After `revoke(terminate=True)`: remove the killed task's containers and
record it as cancelled (main process; celery_app connects it to task_revoked)."""

from __future__ import annotations

import logging
import threading

from hivemind_celery.worker.reaper import runtime

log = logging.getLogger(__name__)


def cleanup_revoked(request=None, terminated: bool = False, **_: object) -> None:
    if request is None or not terminated:
        return
    task_id = request.id
    # Do not block the main loop on the Docker API.
    threading.Thread(target=kill_and_record, args=(task_id,), name=f"revoke-{task_id}", daemon=True).start()


def kill_and_record(task_id: str) -> None:
    from hivemind_celery.task.cancellation import record_terminated

    try:
        killed = runtime().kill(task_id)
        log.info("revoked task: removed %d container(s)", killed, extra={"task_id": task_id})
    except Exception:  # noqa: BLE001
        log.exception("could not remove the revoked task's containers", extra={"task_id": task_id})
    record_terminated(task_id)
